package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/spf13/cobra"

	"github.com/trellis-mesh/trellis/controller/settings"
	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/internal/version"
	"github.com/trellis-mesh/trellis/manifests/crds"
)

// Commands are install and uninstall.
func Commands(env *clienv.Env) []*cobra.Command {
	return []*cobra.Command{installCommand(env), uninstallCommand(env)}
}

type installFlags struct {
	acl      bool
	dryRun   bool
	output   *string
	registry string
	tag      string
	wait     time.Duration
	crds     bool
}

// defaultTag is the image tag install uses: this plugin's version when it
// is a release, else the manifests' own tag.
func defaultTag() string {
	if v := version.Get(); releaseVersion.MatchString(v) {
		return v
	}
	return ""
}

var (
	releaseVersion = regexp.MustCompile(`^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$`)
	// A registry path: host[:port] and path components, no scheme, tag
	// or trailing slash.
	registryRE = regexp.MustCompile(`^[a-z0-9]+([._-][a-z0-9]+)*(\.[a-z0-9-]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$`)
	// The OCI distribution spec's tag grammar.
	tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
)

func installCommand(env *clienv.Env) *cobra.Command {
	f := &installFlags{}
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install or upgrade Trellis in the cluster",
		Long: `Install applies the SMI CRDs and the Trellis control and data plane (namespace
trellis-system, RBAC, settings, controller Deployment, proxy DaemonSet) with
server-side apply, then waits until the CRDs are established, the controller
is available and has elected a leader, and a proxy runs on every node.

Before changing anything it checks that you may do all of it, and dry-runs
every object on the server: a refusal changes nothing. Running it again
upgrades in place, keeps the settings edited in the cluster (ConfigMap
trellis-system/trellis-controller) and the ACL mode unless --acl is given,
and prunes objects an older version installed that this one no longer ships.`,
		Example: `  kubectl trellis install
  kubectl trellis install --acl --image-tag v0.2.0
  kubectl trellis install --dry-run -o yaml > trellis.yaml    # review, or apply with kubectl
  kubectl trellis install --dry-run | kubectl apply --server-side --field-manager=kubectl-trellis --dry-run=server -f -   # preview an upgrade`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().BoolVar(&f.acl, "acl", false, "deny traffic unless an SMI TrafficTarget allows it (default: off on a new install, unchanged on an upgrade)")
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "print the objects instead of applying them; reads nothing from the cluster")
	cmd.Flags().StringVar(&f.registry, "image-registry", "", "registry path of the trellis-controller and trellis-proxy images (default ghcr.io/trellis-mesh)")
	cmd.Flags().StringVar(&f.tag, "image-tag", defaultTag(), "tag of the images (default: this plugin's version when it is a release, else the manifests' tag)")
	cmd.Flags().DurationVar(&f.wait, "wait", 3*time.Minute, "how long to wait for Trellis to be ready; 0 applies and returns")
	cmd.Flags().BoolVar(&f.crds, "crds", true, "apply the SMI CRDs too (--crds=false when they are managed elsewhere; they must exist)")
	cmd.PreRunE = func(c *cobra.Command, _ []string) error {
		switch {
		case f.registry != "" && !registryRE.MatchString(f.registry):
			return clienv.Usagef("--image-registry %q: want a registry path such as ghcr.io/trellis-mesh or registry.local:5000/mirror (no scheme, tag or trailing slash)", f.registry)
		case f.tag != "" && !tagRE.MatchString(f.tag):
			return clienv.Usagef("--image-tag %q: want an image tag such as v0.2.0 (letters, digits, '_', '.', '-'; at most 128)", f.tag)
		case f.wait < 0:
			return clienv.Usagef("--wait %s: must not be negative", f.wait)
		case c.Flags().Changed("output") && !f.dryRun:
			return clienv.Usagef("--output is for --dry-run; install prints progress")
		case env.MeshNamespace != MeshNamespace:
			return clienv.Usagef("--mesh-namespace %q: Trellis installs into %s only (the SMI CRDs' conversion webhook names it)", env.MeshNamespace, MeshNamespace)
		}
		return nil
	}
	f.output = clienv.OutputFlag(cmd, clienv.YAML, clienv.JSON)
	cmd.RunE = func(c *cobra.Command, _ []string) error {
		var acl *bool
		if c.Flags().Changed("acl") {
			acl = &f.acl
		}
		opts := renderOptions{Registry: f.registry, Tag: f.tag, ACL: acl, NoCRDs: !f.crds}
		if f.dryRun {
			return dryRun(env.IO.Out, *f.output, opts)
		}
		in := &installer{env: env, out: env.IO.Out, opts: opts, wait: f.wait}
		return in.run(c.Context())
	}
	return cmd
}

// dryRun prints the objects install would apply.
func dryRun(w io.Writer, format string, opts renderOptions) error {
	objs, err := render(opts)
	if err != nil {
		return err
	}
	if format == clienv.JSON {
		items := make([]any, len(objs))
		for i, u := range objs {
			items[i] = u.Object
		}
		return clienv.PrintData(w, format, map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	}
	for i, u := range objs {
		if i > 0 {
			fmt.Fprintln(w, "---")
		}
		if err := clienv.PrintData(w, clienv.YAML, u.Object); err != nil {
			return err
		}
	}
	return nil
}

type installer struct {
	env  *clienv.Env
	out  io.Writer
	opts renderOptions
	wait time.Duration
	c    *cluster
}

// step is one object to apply.
type step struct {
	u    *unstructured.Unstructured
	r    ref
	live *unstructured.Unstructured
}

func (in *installer) run(ctx context.Context) error {
	if ctx == nil {
		ctx = context.Background()
	}
	var err error
	if in.c, err = connect(in.env); err != nil {
		return err
	}
	c := in.c
	// The ConfigMap and namespace first: an upgrade keeps the settings
	// edited in the cluster, and a namespace being deleted stops here.
	nsRef := ref{GVR: nsGVR, Kind: "Namespace", Name: MeshNamespace}
	cmRef := ref{GVR: cmGVR, Kind: "ConfigMap", Namespace: MeshNamespace, Name: settingsConfigMap, Namespaced: true}
	if err := c.access.require(ctx, []access{nsRef.access("get"), cmRef.access("get")}); err != nil {
		return clienv.APIError("install", err)
	}
	liveNS, err := c.get(ctx, nsRef)
	if err != nil {
		return err
	}
	if liveNS != nil && liveNS.GetDeletionTimestamp() != nil {
		return clienv.Fail(clienv.ExitFailure, fmt.Errorf("install: namespace %s is being deleted (an uninstall?); nothing was changed", MeshNamespace),
			"wait until `kubectl get namespace "+MeshNamespace+"` finds nothing, then run install again")
	}
	liveCM, err := c.get(ctx, cmRef)
	if err != nil {
		return err
	}
	notes, err := in.keepSettings(liveCM)
	if err != nil {
		return err
	}
	objs, err := render(in.opts)
	if err != nil {
		return err
	}
	steps := make([]step, len(objs))
	var reads []access
	for i, u := range objs {
		r, err := c.ref(u)
		if err != nil {
			return err
		}
		steps[i] = step{u: u, r: r}
		reads = append(reads, r.access("get"))
	}
	scopes, err := c.listScopes()
	if err != nil {
		return err
	}
	for _, s := range scopes {
		reads = append(reads, s.listAccess())
	}
	if err := c.access.require(ctx, reads); err != nil {
		return clienv.APIError("install", err)
	}
	// Read what is there: decide create or update, refuse to take over
	// objects that are not Trellis's.
	upgrade := false
	for i := range steps {
		s := &steps[i]
		if s.live, err = c.get(ctx, s.r); err != nil {
			return err
		}
		if s.live == nil {
			continue
		}
		if s.u.GetKind() == "Deployment" && s.u.GetName() == controllerName {
			upgrade = true
		}
		if !ours(s.live) && s.u.GetKind() != "Namespace" {
			return clienv.Fail(clienv.ExitFailure, fmt.Errorf("install: %s exists and is not Trellis's (no label %s=%s); nothing was changed", s.r, PartOfLabel, PartOfValue),
				"delete or rename it, then run install again")
		}
	}
	if in.opts.NoCRDs {
		if err := in.requireCRDs(ctx); err != nil {
			return err
		}
	}
	// Objects an older version applied that this one no longer ships.
	applied, appliedRefs, err := c.appliedObjects(ctx)
	if err != nil {
		return err
	}
	shipping := map[string]bool{}
	for _, s := range steps {
		shipping[key(s.r)] = true
	}
	var prune []ref
	for i, u := range applied {
		r := appliedRefs[i]
		if shipping[key(r)] || (in.opts.NoCRDs && r.Kind == "CustomResourceDefinition") || u.GetDeletionTimestamp() != nil {
			continue
		}
		prune = append(prune, r)
	}
	// May the user do all of it?
	var writes []access
	for _, s := range steps {
		writes = append(writes, s.r.access("patch"))
		if s.live == nil {
			writes = append(writes, s.r.access("create"))
		}
	}
	for _, r := range prune {
		writes = append(writes, r.access("delete"))
	}
	if in.wait > 0 {
		writes = append(writes, waitAccess()...)
	}
	if err := c.access.require(ctx, writes); err != nil {
		return clienv.APIError("install", err)
	}
	if err := c.checkEscalation(ctx, objs); err != nil {
		return clienv.APIError("install", err)
	}
	// Dry-run every object whose namespace exists: the apiserver's own
	// validation, admission and RBAC, before anything changes.
	for _, s := range steps {
		if s.r.Namespaced && s.r.Namespace == MeshNamespace && liveNS == nil {
			continue
		}
		if _, err := in.apply(ctx, s, true); err != nil {
			return applyError(s, err, "nothing was changed")
		}
	}

	imgs := images(objs)
	acl := "off"
	for _, s := range steps {
		if s.u.GetKind() == "ConfigMap" && s.u.GetName() == settingsConfigMap {
			text, _, _ := unstructured.NestedString(s.u.Object, "data", settingsKey)
			if st, err := settings.Parse([]byte(text)); err == nil && st.ACL {
				acl = "on"
			}
		}
	}
	verb := "Installing"
	if upgrade {
		verb = "Upgrading"
	}
	fmt.Fprintf(in.out, "%s Trellis in %s: images %s, ACL %s\n", verb, MeshNamespace, strings.Join(imgs, ", "), acl)
	for _, n := range notes {
		fmt.Fprintln(in.out, n)
	}
	for _, s := range steps {
		res, err := in.apply(ctx, s, false)
		if err != nil {
			fmt.Fprintf(in.out, "%s %s\n", in.env.Mark(false), s.r)
			return applyError(s, err, "the objects above were applied; fix the cause and run install again")
		}
		fmt.Fprintf(in.out, "%s %s %s\n", in.env.Mark(true), s.r, res)
	}
	for _, r := range prune {
		err := c.resource(r).Delete(ctx, r.Name, metav1.DeleteOptions{PropagationPolicy: ptr(metav1.DeletePropagationBackground)})
		if err != nil && !apierrors.IsNotFound(err) {
			return clienv.APIError("install: prune "+r.String(), err)
		}
		fmt.Fprintf(in.out, "%s %s pruned (no longer shipped)\n", in.env.Mark(true), r)
	}
	if in.wait > 0 {
		names, err := crdNames()
		if err != nil {
			return err
		}
		w := &waiter{env: in.env, c: c, out: in.out, crds: names}
		if err := w.run(ctx, in.wait); err != nil {
			return err
		}
	}
	done := "installed"
	if upgrade {
		done = "upgraded"
	}
	if in.wait == 0 {
		fmt.Fprintf(in.out, "Trellis is %s (not waiting for readiness: --wait=0). Check it with: kubectl trellis check\n", done)
	} else {
		fmt.Fprintf(in.out, "Trellis is %s and ready. Check it with: kubectl trellis check\n", done)
	}
	return nil
}

// requireCRDs checks, for --crds=false, that the CRDs exist.
func (in *installer) requireCRDs(ctx context.Context) error {
	objs, err := render(renderOptions{})
	if err != nil {
		return err
	}
	for _, u := range objs {
		if u.GetKind() != "CustomResourceDefinition" {
			continue
		}
		r, err := in.c.ref(u)
		if err != nil {
			return err
		}
		live, err := in.c.get(ctx, r)
		if err != nil {
			return clienv.APIError("install", err)
		}
		if live == nil {
			return clienv.Fail(clienv.ExitNotFound, fmt.Errorf("install --crds=false: %s is not installed; nothing was changed", r),
				"install the SMI CRDs (kubectl apply -f manifests/crds/), or drop --crds=false")
		}
	}
	return nil
}

// apply server-side applies one object (dry: on the server, changing
// nothing) and says whether it was created, configured or unchanged.
// Conflicts over fields another manager owns are forced only on objects
// that are Trellis's; an adopted namespace keeps its other owners' fields.
func (in *installer) apply(ctx context.Context, s step, dry bool) (string, error) {
	body, err := s.u.MarshalJSON()
	if err != nil {
		return "", err
	}
	force := s.live == nil || ours(s.live)
	opts := metav1.PatchOptions{FieldManager: FieldManager, Force: &force}
	if dry {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	var got *unstructured.Unstructured
	// Applying is idempotent: a dropped connection is retried.
	err = retry.OnError(retry.DefaultBackoff, transient, func() error {
		var err error
		got, err = in.c.resource(s.r).Patch(ctx, s.r.Name, types.ApplyPatchType, body, opts)
		return err
	})
	if err != nil {
		return "", err
	}
	switch {
	case s.live == nil:
		return "created", nil
	case got.GetResourceVersion() == s.live.GetResourceVersion():
		return "unchanged", nil
	}
	return "configured", nil
}

func applyError(s step, err error, state string) error {
	what := fmt.Sprintf("install: %s (%s)", s.r, state)
	if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) || apierrors.IsNotFound(err) {
		return clienv.APIError(what, err)
	}
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return clienv.Fail(clienv.ExitFailure, fmt.Errorf("%s: %s", what, se.Status().Message), "")
	}
	return clienv.APIError(what, err)
}

// keepSettings makes an upgrade keep the cluster's settings: its ACL
// mode unless --acl was given, and the whole settings.yaml when someone
// edited it (and it still parses). It returns lines to print.
func (in *installer) keepSettings(live *unstructured.Unstructured) ([]string, error) {
	if live == nil || !ours(live) {
		return nil, nil
	}
	text, _, _ := unstructured.NestedString(live.Object, "data", settingsKey)
	cur, perr := settings.Parse([]byte(text))
	if perr != nil {
		return []string{fmt.Sprintf("%s the settings in ConfigMap %s/%s do not parse (%v); replacing them with the shipped ones", in.env.Warn(), MeshNamespace, settingsConfigMap, perr)}, nil
	}
	if in.opts.ACL == nil {
		in.opts.ACL = &cur.ACL
	}
	shipped, err := shippedSettings()
	if err != nil {
		return nil, err
	}
	if plain, err := setACL(shipped, cur.ACL); err == nil && plain == text {
		return nil, nil
	}
	in.opts.Settings = text
	return []string{fmt.Sprintf("keeping the settings edited in ConfigMap %s/%s", MeshNamespace, settingsConfigMap)}, nil
}

// crdNames are the CRDs Trellis ships.
func crdNames() ([]string, error) {
	var out []string
	for _, f := range crds.Files() {
		objs, err := decodeFile(crds.FS.ReadFile, "manifests/crds/", f)
		if err != nil {
			return nil, err
		}
		for _, u := range objs {
			out = append(out, u.GetName())
		}
	}
	return out, nil
}

func ptr[T any](v T) *T { return &v }
