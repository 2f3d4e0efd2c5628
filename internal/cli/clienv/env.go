package clienv

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Env is the state one invocation of kubectl-trellis shares between its
// commands. Clients are built on first use, so commands that never talk to
// the cluster (--dry-run, version --client) work without one.
type Env struct {
	Flags *genericclioptions.ConfigFlags
	IO    genericiooptions.IOStreams
	// Color is set when Out is a terminal and NO_COLOR is unset.
	Color bool
	// MeshNamespace is where Trellis runs (--mesh-namespace).
	MeshNamespace string

	once    sync.Once
	cfg     *rest.Config
	kube    kubernetes.Interface
	dyn     dynamic.Interface
	initErr error
}

// DefaultMeshNamespace is where install puts Trellis.
const DefaultMeshNamespace = "trellis-system"

// New returns an Env writing to streams.
func New(streams genericiooptions.IOStreams) *Env {
	e := &Env{Flags: genericclioptions.NewConfigFlags(true), IO: streams, MeshNamespace: DefaultMeshNamespace}
	if f, ok := streams.Out.(*os.File); ok && term.IsTerminal(int(f.Fd())) && os.Getenv("NO_COLOR") == "" {
		e.Color = true
	}
	return e
}

// AddFlags registers the kubectl connection flags and --mesh-namespace on
// the root command.
func (e *Env) AddFlags(cmd *cobra.Command) {
	e.Flags.AddFlags(cmd.PersistentFlags())
	cmd.PersistentFlags().StringVar(&e.MeshNamespace, "mesh-namespace", e.MeshNamespace, "namespace Trellis is installed in")
}

func (e *Env) init() error {
	e.once.Do(func() {
		cfg, err := e.Flags.ToRESTConfig()
		if err != nil {
			e.initErr = Fail(ExitConfig, fmt.Errorf("kubeconfig: %w", err), "pass --kubeconfig or set KUBECONFIG to a cluster's kubeconfig")
			return
		}
		cfg.UserAgent = "kubectl-trellis"
		e.cfg = cfg
		if e.kube, err = kubernetes.NewForConfig(cfg); err != nil {
			e.initErr = err
			return
		}
		e.dyn, e.initErr = dynamic.NewForConfig(cfg)
	})
	return e.initErr
}

// RESTConfig is the cluster connection.
func (e *Env) RESTConfig() (*rest.Config, error) {
	if err := e.init(); err != nil {
		return nil, err
	}
	return e.cfg, nil
}

// Kube is a typed client.
func (e *Env) Kube() (kubernetes.Interface, error) {
	if err := e.init(); err != nil {
		return nil, err
	}
	return e.kube, nil
}

// Dynamic is a dynamic client (SMI objects).
func (e *Env) Dynamic() (dynamic.Interface, error) {
	if err := e.init(); err != nil {
		return nil, err
	}
	return e.dyn, nil
}

// Namespace is -n, or the kubeconfig context's namespace, or "default".
// explicit reports whether -n was given.
func (e *Env) Namespace() (ns string, explicit bool, err error) {
	ns, explicit, err = e.Flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", false, Fail(ExitConfig, fmt.Errorf("kubeconfig: %w", err), "pass --kubeconfig or set KUBECONFIG to a cluster's kubeconfig")
	}
	return ns, explicit, nil
}

// Exit codes. Scripts can tell "the cluster is unhealthy" (check) from "you
// asked for something wrong" (usage) from "the cluster said no".
const (
	ExitOK = 0
	// ExitFailure: an operation failed (API error, timeout).
	ExitFailure = 1
	// ExitUsage: bad flags or arguments; nothing was changed.
	ExitUsage = 2
	// ExitCheck: check ran and found problems.
	ExitCheck = 3
	// ExitConfig: no usable kubeconfig or cluster.
	ExitConfig = 4
	// ExitForbidden: the user's RBAC does not allow it.
	ExitForbidden = 5
	// ExitNotFound: a named object does not exist.
	ExitNotFound = 6
)

// Error is an error with an exit code and an optional hint (what to do).
type Error struct {
	Code int
	Err  error
	Hint string
}

func (e *Error) Error() string {
	if e.Hint == "" {
		return e.Err.Error()
	}
	return e.Err.Error() + "; " + e.Hint
}

func (e *Error) Unwrap() error { return e.Err }

// Fail wraps err with an exit code and a hint.
func Fail(code int, err error, hint string) error {
	return &Error{Code: code, Err: err, Hint: hint}
}

// Usagef is a usage error (exit 2): bad flags or arguments.
func Usagef(format string, args ...any) error {
	return &Error{Code: ExitUsage, Err: fmt.Errorf(format, args...)}
}

// Code is the exit code for err (0 for nil).
func Code(err error) int {
	if err == nil {
		return ExitOK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ExitFailure
}

// Report prints err as the one line a user sees, prefixed with the
// program name.
func Report(w io.Writer, err error) {
	if err != nil {
		fmt.Fprintf(w, "kubectl-trellis: %v\n", err)
	}
}

// Normalize gives cobra's own errors (unknown flag, unknown command, wrong
// argument count) the usage exit code.
func Normalize(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	msg := err.Error()
	for _, p := range []string{"unknown flag", "unknown shorthand flag", "unknown command", "accepts ", "requires at least", "requires at most", "invalid argument", "flag needs an argument", "required flag"} {
		if strings.HasPrefix(msg, p) {
			return &Error{Code: ExitUsage, Err: err, Hint: "see --help"}
		}
	}
	return err
}
