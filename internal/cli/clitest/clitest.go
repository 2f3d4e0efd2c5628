package clitest

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// Kubeconfig writes cfg as a kubeconfig file (credentials inlined) whose
// context has namespace ns, and returns its path.
func Kubeconfig(t testing.TB, cfg *rest.Config, ns string) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: caData(t, cfg), InsecureSkipTLSVerify: cfg.Insecure}
	kc.AuthInfos["test"] = &clientcmdapi.AuthInfo{ClientCertificateData: fileOrData(t, cfg.CertData, cfg.CertFile),
		ClientKeyData: fileOrData(t, cfg.KeyData, cfg.KeyFile), Token: cfg.BearerToken}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test", Namespace: ns}
	kc.CurrentContext = "test"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func caData(t testing.TB, cfg *rest.Config) []byte {
	return fileOrData(t, cfg.CAData, cfg.CAFile)
}

func fileOrData(t testing.TB, data []byte, file string) []byte {
	t.Helper()
	if len(data) > 0 || file == "" {
		return data
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Result is one command run.
type Result struct {
	Out, Err string
	Code     int
}

// Run builds a root command with the given subcommands, runs it with args
// (prefixed by --kubeconfig when kubeconfig is set) and returns what it
// printed and its exit code, as cmd/kubectl-trellis would.
func Run(t testing.TB, commands func(*clienv.Env) []*cobra.Command, kubeconfig string, args ...string) Result {
	t.Helper()
	var out, errb bytes.Buffer
	env := clienv.New(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errb})
	root := &cobra.Command{Use: "kubectl-trellis", SilenceUsage: true, SilenceErrors: true}
	env.AddFlags(root)
	root.AddCommand(commands(env)...)
	if kubeconfig != "" {
		args = append([]string{"--kubeconfig", kubeconfig}, args...)
	}
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errb)
	err := root.Execute()
	clienv.Report(&errb, clienv.Normalize(err))
	return Result{Out: out.String(), Err: errb.String(), Code: clienv.Code(clienv.Normalize(err))}
}

// Golden compares got with testdata/<name>.golden (-update rewrites it).
func Golden(t testing.TB, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) != got {
		t.Fatalf("output differs from %s (run with -update if intended):\n--- got\n%s--- want\n%s", path, got, want)
	}
}
