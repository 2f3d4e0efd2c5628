package author

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/smi/annotations"
)

type membershipOptions struct {
	join   bool
	nsWide bool
	dryRun bool
	output *string
}

func newMembershipCommand(env *clienv.Env, join bool) *cobra.Command {
	o := &membershipOptions{join: join}
	cmd := &cobra.Command{
		Use:   "join (SERVICE | --namespace-wide -n NAMESPACE)",
		Short: "Put a Service, or every Service of a namespace, into the mesh",
		Long: `join opts a Service into the mesh by setting the annotation
trellis.io/mesh: "true" on it. Nothing else in the Service changes: the
annotation is written with a merge patch that touches only that key.

With --namespace-wide (and -n NAMESPACE, required so that a whole namespace
is never meshed by accident) it labels the namespace trellis.io/mesh=enabled
instead: every Service in it is meshed unless it says trellis.io/mesh: "false".

Clients reach a meshed Service through its mesh name,
SERVICE.NAMESPACE.mesh (the domain is configurable). If the annotation
already says what join would write, nothing is changed and join says so.`,
		Example: `  # Mesh the Service web in the current namespace
  kubectl trellis join web

  # Mesh the Service api in namespace shop, showing what would change
  kubectl trellis join api -n shop --dry-run

  # Mesh every Service in namespace shop
  kubectl trellis join -n shop --namespace-wide`,
		Args: o.args,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), env, args)
		},
	}
	if !join {
		cmd.Use = "leave (SERVICE | --namespace-wide -n NAMESPACE)"
		cmd.Short = "Take a Service, or a namespace, out of the mesh"
		cmd.Long = `leave takes a Service out of the mesh by setting the annotation
trellis.io/mesh: "false" on it, which keeps it out even when its namespace is
meshed. Nothing else in the Service changes (a merge patch that touches only
that key). Clients that used the mesh name SERVICE.NAMESPACE.mesh must go
back to the Service's own name.

With --namespace-wide (and -n NAMESPACE, required) it removes the namespace
label trellis.io/mesh=enabled; Services in the namespace annotated
trellis.io/mesh: "true" stay in the mesh, and leave lists them.`
		cmd.Example = `  # Take the Service web out of the mesh
  kubectl trellis leave web

  # Stop meshing namespace shop as a whole
  kubectl trellis leave -n shop --namespace-wide`
	}
	cmd.Flags().BoolVar(&o.nsWide, "namespace-wide", false, "change the namespace's label instead of one Service's annotation (needs -n)")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "say what would change without changing it")
	o.output = clienv.OutputFlag(cmd, Text, clienv.YAML, clienv.JSON)
	return cmd
}

func (o *membershipOptions) verb() string {
	if o.join {
		return "join"
	}
	return "leave"
}

// would picks the wording for a change made or, in a dry run, not made.
func (o *membershipOptions) would(done, dry string) string {
	if o.dryRun {
		return dry
	}
	return done
}

func (o *membershipOptions) args(_ *cobra.Command, args []string) error {
	switch {
	case o.nsWide && len(args) > 0:
		return clienv.Usagef("%s --namespace-wide takes no SERVICE (it changes the namespace given with -n); drop %q or drop --namespace-wide", o.verb(), args[0])
	case !o.nsWide && len(args) == 0:
		return clienv.Usagef("%s needs a SERVICE name, or --namespace-wide with -n NAMESPACE", o.verb())
	case len(args) > 1:
		return clienv.Usagef("%s takes one SERVICE, got %d (%s); run it once per Service", o.verb(), len(args), strings.Join(args, " "))
	}
	return nil
}

func (o *membershipOptions) run(ctx context.Context, env *clienv.Env, args []string) error {
	ns, explicit, err := env.Namespace()
	if err != nil {
		return err
	}
	var ch Change
	var extra []string
	if o.nsWide {
		if !explicit {
			return clienv.Usagef("%s --namespace-wide needs -n NAMESPACE: it changes every Service in that namespace, so name it explicitly", o.verb())
		}
		ch, extra, err = o.namespace(ctx, env, ns)
	} else {
		if err := checkServiceName("SERVICE", args[0]); err != nil {
			return err
		}
		ch, extra, err = o.service(ctx, env, ns, args[0])
	}
	if err != nil {
		return err
	}
	if *o.output != Text {
		return clienv.PrintData(env.IO.Out, *o.output, []Change{ch})
	}
	fmt.Fprintln(env.IO.Out, ch.Detail+dryNote(ch.DryRun && ch.Action != actUnchanged))
	for _, l := range extra {
		fmt.Fprintln(env.IO.Out, l)
	}
	return nil
}

// quoted renders an optional value for messages: "x", or unset.
func quoted(v *string) string {
	if v == nil {
		return "unset"
	}
	return fmt.Sprintf("%q", *v)
}

func (o *membershipOptions) service(ctx context.Context, env *clienv.Env, ns, name string) (Change, []string, error) {
	kube, err := env.Kube()
	if err != nil {
		return Change{}, nil, err
	}
	svc, err := kube.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Change{}, nil, clienv.Fail(clienv.ExitNotFound, fmt.Errorf("there is no Service %s/%s", ns, name), "check the name, or pass -n NAMESPACE")
	}
	if err != nil {
		return Change{}, nil, clienv.APIError(fmt.Sprintf("get Service %s/%s", ns, name), err)
	}
	want, state := "false", "out of"
	if o.join {
		want, state = "true", "in"
	}
	ch := Change{APIVersion: "v1", Kind: "Service", Namespace: ns, Name: name,
		Field: fmt.Sprintf("metadata.annotations[%q]", annotations.Mesh), To: strp(want), DryRun: o.dryRun}
	if cur, ok := svc.Annotations[annotations.Mesh]; ok {
		ch.From = strp(cur)
	}
	if ch.From != nil && *ch.From == want {
		ch.Action = actUnchanged
		ch.Detail = fmt.Sprintf("Service %s/%s is already %s the mesh: annotation %s is %q; nothing changed", ns, name, state, annotations.Mesh, want)
		return ch, nil, nil
	}
	ch.Action = actUpdate
	ch.Detail = fmt.Sprintf("Service %s/%s %s %s the mesh: %s annotation %s=%q (was %s)", ns, name, o.would("is now", "would be"), state, o.would("set", "would set"), annotations.Mesh, want, quoted(ch.From))
	if !o.dryRun {
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{annotations.Mesh: want}}})
		svc, err = kube.CoreV1().Services(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager})
		if err != nil {
			return Change{}, nil, clienv.APIError(fmt.Sprintf("annotate Service %s/%s", ns, name), err)
		}
	}
	if o.join {
		// The Service's other Trellis annotations are read from now on:
		// say now if any of them is wrong.
		_, ps := annotations.ForService(svc, annotations.HTTP)
		warn(env, ps)
	}
	return ch, nil, nil
}

func (o *membershipOptions) namespace(ctx context.Context, env *clienv.Env, ns string) (Change, []string, error) {
	kube, err := env.Kube()
	if err != nil {
		return Change{}, nil, err
	}
	nsObj, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Change{}, nil, clienv.Fail(clienv.ExitNotFound, fmt.Errorf("namespace %s not found", ns), "check the name given with -n")
	}
	if err != nil {
		return Change{}, nil, clienv.APIError("get namespace "+ns, err)
	}
	ch := Change{APIVersion: "v1", Kind: "Namespace", Name: ns, Field: fmt.Sprintf("metadata.labels[%q]", annotations.NamespaceLabel), DryRun: o.dryRun}
	if cur, ok := nsObj.Labels[annotations.NamespaceLabel]; ok {
		ch.From = strp(cur)
	}
	var patchValue any
	switch {
	case o.join && ch.From != nil && *ch.From == "enabled":
		ch.To = ch.From
		ch.Action = actUnchanged
		ch.Detail = fmt.Sprintf("Namespace %s is already meshed: label %s is \"enabled\"; nothing changed", ns, annotations.NamespaceLabel)
	case o.join:
		ch.To = strp("enabled")
		ch.Action = actUpdate
		patchValue = "enabled"
		ch.Detail = fmt.Sprintf("Namespace %s %s meshed: %s label %s=\"enabled\" (was %s); its Services are in the mesh unless annotated %s: \"false\"", ns, o.would("is now", "would be"), o.would("set", "would set"), annotations.NamespaceLabel, quoted(ch.From), annotations.Mesh)
	case ch.From == nil || *ch.From != "enabled":
		ch.To = ch.From
		ch.Action = actUnchanged
		ch.Detail = fmt.Sprintf("Namespace %s is not meshed as a whole (label %s is %s); nothing changed", ns, annotations.NamespaceLabel, quoted(ch.From))
	default:
		ch.Action = actUpdate
		patchValue = nil // JSON null removes the label
		ch.Detail = fmt.Sprintf("Namespace %s %s meshed as a whole: %s label %s (was \"enabled\")", ns, o.would("is no longer", "would no longer be"), o.would("removed", "would remove"), annotations.NamespaceLabel)
	}
	if ch.Action == actUpdate && !o.dryRun {
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{annotations.NamespaceLabel: patchValue}}})
		if _, err := kube.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager}); err != nil {
			return Change{}, nil, clienv.APIError(fmt.Sprintf("label namespace %s", ns), err)
		}
	}
	return ch, o.exceptions(ctx, kube.CoreV1().Services(ns), ns), nil
}

// exceptions lists the Services whose own annotation overrides the
// namespace: those that stay out after join, or stay in after leave. It is
// best effort: without permission to list Services it says nothing.
func (o *membershipOptions) exceptions(ctx context.Context, svcs interface {
	List(context.Context, metav1.ListOptions) (*corev1.ServiceList, error)
}, ns string) []string {
	l, err := svcs.List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil
	}
	want, what := "false", "stay out of the mesh"
	if !o.join {
		want, what = "true", "stay in the mesh"
	}
	var names []string
	for _, s := range l.Items {
		if strings.EqualFold(strings.TrimSpace(s.Annotations[annotations.Mesh]), want) {
			names = append(names, s.Name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	return []string{fmt.Sprintf("Services in %s that %s by their own annotation %s=%q: %s", ns, what, annotations.Mesh, want, strings.Join(names, ", "))}
}
