package author

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/smi"
	"github.com/trellis-mesh/trellis/smi/match"
)

type allowOptions struct {
	from, to string
	path     string
	methods  []string
	ports    []string
	name     string
	dryRun   bool
	output   *string
}

func newAllowCommand(env *clienv.Env) *cobra.Command {
	o := &allowOptions{}
	cmd := &cobra.Command{
		Use:   "allow --from sa/NAMESPACE/NAME --to sa/NAMESPACE/NAME [--path REGEX] [--methods M,...] [--ports P,...]",
		Short: "Let one workload reach another (SMI TrafficTarget)",
		Long: `allow grants pods running as the --from ServiceAccount access to pods running as
the --to ServiceAccount. With Trellis's ACL mode on, access is denied unless a
TrafficTarget allows it; allow writes that TrafficTarget, in the --to
namespace, plus the route object its rule points to:

  --path and/or --methods  an HTTPRouteGroup: only HTTP requests whose path
                           matches REGEX (RE2, anchored at the start) and whose
                           method is one of --methods (case-sensitive; * = any)
  neither                  a TCPRoute: any TCP connection, HTTP included, to
                           the --ports given, or to every port

--ports are ports of the destination pods (container ports, not the
Service's port). With --path/--methods, --ports takes one port, which the
TrafficTarget's destination.port holds (SMI cannot tie an HTTP rule to
several ports); run allow again with another --name for more ports.

The objects are named DEST-from-SRCNAMESPACE-SRC (or --name), labelled
app.kubernetes.io/managed-by=kubectl-trellis, and written in the newest SMI
version the cluster serves. Running allow again for the same pair updates
them in place: the rules become what the flags say now. Reusing a --name
for another source adds that source to the same TrafficTarget, so the
sources share its rules. Everything is checked before anything is written
(flags, the SMI rules Trellis applies, your permissions).`,
		Example: `  # frontend may call api with GET or POST under /api/
  kubectl trellis allow --from sa/shop/frontend --to sa/shop/api --path '/api/' --methods GET,POST

  # api may open connections to the database on port 5432
  kubectl trellis allow --from sa/shop/api --to sa/data/postgres --ports 5432

  # Print the objects instead of applying them
  kubectl trellis allow --from sa/shop/frontend --to sa/shop/api --dry-run -o yaml`,
		Args: noArgs("allow"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), env)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.from, "from", "", "the source ServiceAccount: sa/NAMESPACE/NAME")
	f.StringVar(&o.to, "to", "", "the destination ServiceAccount: sa/NAMESPACE/NAME (the TrafficTarget goes in its namespace)")
	f.StringVar(&o.path, "path", "", "allow only HTTP requests whose path matches this RE2 expression (anchored at the start)")
	f.StringSliceVar(&o.methods, "methods", nil, "allow only these HTTP methods (case-sensitive, e.g. GET,POST; * = any)")
	f.StringSliceVar(&o.ports, "ports", nil, "destination pod ports (e.g. 5432 or 8080,8443); default every port")
	f.StringVar(&o.name, "name", "", "name of the TrafficTarget and its route (default DEST-from-SRCNAMESPACE-SRC)")
	f.BoolVar(&o.dryRun, "dry-run", false, "check everything and print what would change, without changing it")
	o.output = clienv.OutputFlag(cmd, Text, clienv.YAML, clienv.JSON)
	return cmd
}

func noArgs(verb string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) > 0 {
			return clienv.Usagef("%s takes no arguments, got %q; name the workloads with --from sa/NAMESPACE/NAME --to sa/NAMESPACE/NAME", verb, strings.Join(args, " "))
		}
		return nil
	}
}

// pair reads --from and --to, and checks that -n, if given, is the
// destination's namespace (where TrafficTargets live).
func pair(env *clienv.Env, from, to string) (src, dst smi.Identity, err error) {
	if from == "" {
		return src, dst, clienv.Usagef("--from is required: the source ServiceAccount, %s", identityForm)
	}
	if to == "" {
		return src, dst, clienv.Usagef("--to is required: the destination ServiceAccount, %s", identityForm)
	}
	if src, err = parseIdentity("--from", from); err != nil {
		return src, dst, err
	}
	if dst, err = parseIdentity("--to", to); err != nil {
		return src, dst, err
	}
	ns, explicit, err := env.Namespace()
	if err != nil {
		return src, dst, err
	}
	if explicit && ns != dst.Namespace {
		return src, dst, clienv.Usagef("-n %s conflicts with --to %s: TrafficTargets live in the destination's namespace (%s); drop -n", ns, to, dst.Namespace)
	}
	return src, dst, nil
}

// httpRuleMatchName names the single match of an allow HTTPRouteGroup.
const httpRuleMatchName = "http"

func (o *allowOptions) run(ctx context.Context, env *clienv.Env) error {
	src, dst, err := pair(env, o.from, o.to)
	if err != nil {
		return err
	}
	methods, err := parseMethods(o.methods)
	if err != nil {
		return err
	}
	ports, err := parsePorts(o.ports)
	if err != nil {
		return err
	}
	if o.path != "" {
		if err := match.CheckHTTP(match.HTTPSpec{PathRegex: o.path}); err != nil {
			msg := err.Error()
			if i := strings.Index(msg, ": "); i >= 0 {
				msg = msg[i+2:]
			}
			return clienv.Usagef("--path %q: %s", o.path, msg)
		}
	}
	isHTTP := o.path != "" || len(methods) > 0
	if isHTTP && len(ports) > 1 {
		return clienv.Usagef("--ports %s: with --path or --methods give at most one port (SMI ties an HTTP rule to one destination port); run allow once per port, each with its own --name", strings.Join(o.ports, ","))
	}
	name := o.name
	if name != "" {
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			return clienv.Usagef("--name %q: not a valid object name: %s", name, strings.Join(errs, "; "))
		}
	} else {
		name = targetName(src, dst)
	}
	ns := dst.Namespace
	owner := forValue(smi.KindTrafficTarget, name)

	s, err := connect(env)
	if err != nil {
		return err
	}
	if err := s.discover(); err != nil {
		return err
	}
	ttKV, err := s.version(smi.KindTrafficTarget)
	if err != nil {
		return err
	}
	routeKind, otherKind := smi.KindTCPRoute, smi.KindHTTPRouteGroup
	if isHTTP {
		routeKind, otherKind = otherKind, routeKind
	}
	routeKV, err := s.version(routeKind)
	if err != nil {
		return err
	}
	// Where the ports go: a v1alpha4 TCPRoute lists them; an HTTP rule (or
	// a TCPRoute too old for ports) can only be limited to one port, by the
	// TrafficTarget's destination.port.
	var destPort int32
	tcpPorts := ports
	if isHTTP || (routeKV.version != "v1alpha4" && len(ports) == 1) {
		if len(ports) == 1 {
			destPort = ports[0]
		}
		tcpPorts = nil
	}

	cur, err := s.get(ctx, ttKV, ns, name)
	if err != nil {
		return err
	}
	sources := []smi.Identity{src}
	if cur != nil {
		if !managed(cur) {
			return clienv.Usagef("TrafficTarget %s/%s already exists and was not created by kubectl-trellis; pass --name to choose another name (allow never rewrites your own objects)", ns, name)
		}
		obj, _ := smi.Decode(cur)
		tt, ok := obj.(*smi.TrafficTarget)
		if !ok || tt == nil {
			return clienv.Usagef("TrafficTarget %s/%s cannot be read; delete it and run allow again", ns, name)
		}
		if tt.Destination.Name != dst.Name {
			return clienv.Usagef("TrafficTarget %s/%s already grants access to ServiceAccount %s, not %s; pass --name to choose another name", ns, name, tt.Destination, dst)
		}
		listed := containsIdentity(tt.Sources, src)
		if o.name == "" && !listed {
			return clienv.Usagef("TrafficTarget %s/%s already exists for other sources (%s); pass --name to choose another name", ns, name, identities(tt.Sources))
		}
		sources = tt.Sources
		if !listed {
			sources = append(sources, src)
		}
	}

	p := &plan{s: s}
	var warnings []smi.Problem
	// The route object.
	route := newObject(routeKind, ns, name)
	route.SetLabels(map[string]string{ManagedByLabel: ManagedBy})
	route.SetAnnotations(map[string]string{ForAnnotation: owner})
	var spec match.HTTPSpec
	if isHTTP {
		spec = match.HTTPSpec{Name: httpRuleMatchName, PathRegex: o.path, Methods: methods}
		_ = unstructured.SetNestedSlice(route.Object, []any{httpMatchObject(spec)}, "spec", "matches")
	} else {
		tcp := map[string]any{}
		if len(tcpPorts) > 0 {
			ps := make([]any, len(tcpPorts))
			for i, p := range tcpPorts {
				ps[i] = int64(p)
			}
			tcp["matches"] = map[string]any{"ports": ps}
		}
		route.Object["spec"] = tcp
	}
	builtRoute, ps, err := materialize(route, routeKV, stashLoss{"spec.matches": "several --ports (TCPRoute ports need specs.smi-spec.io/v1alpha4 or newer)"})
	if err != nil {
		return err
	}
	warnings = append(warnings, ps...)
	curRoute, err := s.get(ctx, routeKV, ns, name)
	if err != nil {
		return err
	}
	if curRoute != nil && !ownedBy(curRoute, owner) {
		return clienv.Usagef("%s %s/%s already exists and was not created by kubectl-trellis for TrafficTarget %s; pass --name to choose another name", routeKind, ns, name, name)
	}
	p.add(changeOp(routeKV, curRoute, builtRoute, ruleWhy(isHTTP)))

	// The TrafficTarget.
	tt := newObject(smi.KindTrafficTarget, ns, name)
	tt.SetLabels(map[string]string{ManagedByLabel: ManagedBy})
	dest := map[string]any{"kind": "ServiceAccount", "name": dst.Name, "namespace": ns}
	if destPort != 0 {
		dest["port"] = int64(destPort)
	}
	var srcs []any
	for _, id := range sources {
		srcs = append(srcs, map[string]any{"kind": "ServiceAccount", "name": id.Name, "namespace": id.Namespace})
	}
	tt.Object["spec"] = map[string]any{
		"destination": dest,
		"sources":     srcs,
		"rules":       []any{map[string]any{"kind": string(routeKind), "name": name}},
	}
	builtTT, ps, err := materialize(tt, ttKV, nil)
	if err != nil {
		return err
	}
	warnings = append(warnings, ps...)
	p.add(changeOp(ttKV, cur, builtTT, ""))

	// The route of the other kind, left from an earlier allow with other
	// flags.
	if otherKV, err := s.version(otherKind); err == nil {
		old, err := s.get(ctx, otherKV, ns, name)
		if err != nil {
			return err
		}
		if old != nil && ownedBy(old, owner) {
			p.add(&op{action: actDelete, kv: otherKV, obj: old, why: "replaced by the " + string(routeKind)})
		}
	}

	if err := p.apply(ctx, o.dryRun); err != nil {
		return err
	}
	// Warnings only once the command succeeded: a failure is one line.
	warn(env, dedupeProblems(warnings))
	s.warnACLOff(ctx, "this grant has no effect until it is on")
	for _, id := range []smi.Identity{src, dst} {
		if _, err := s.kube.CoreV1().ServiceAccounts(id.Namespace).Get(ctx, id.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
			warnf(env, "ServiceAccount %s not found; the grant applies to pods running as it once it exists (check the name)", id)
		}
	}
	if *o.output != Text {
		return printObjects(env.IO.Out, *o.output, p, o.dryRun)
	}
	printOps(env.IO.Out, p, o.dryRun)
	fmt.Fprintln(env.IO.Out, describeGrant(src, dst, isHTTP, spec, destPort, tcpPorts, sources)+summaryNote(o.dryRun))
	return nil
}

func ruleWhy(isHTTP bool) string {
	if isHTTP {
		return "for --path/--methods"
	}
	return "for the TrafficTarget's rule"
}

func containsIdentity(ids []smi.Identity, id smi.Identity) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func identities(ids []smi.Identity) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = id.String()
	}
	return strings.Join(s, ", ")
}

// describeGrant says in one sentence what the source may now do.
func describeGrant(src, dst smi.Identity, isHTTP bool, spec match.HTTPSpec, destPort int32, tcpPorts []int32, sources []smi.Identity) string {
	var what string
	switch {
	case isHTTP && describeMatch(spec) == "":
		what = fmt.Sprintf("send any HTTP request to ServiceAccount %s", dst)
	case isHTTP:
		what = fmt.Sprintf("send HTTP requests with %s to ServiceAccount %s", describeMatch(spec), dst)
	default:
		what = fmt.Sprintf("open TCP connections (HTTP included) to ServiceAccount %s", dst)
	}
	switch {
	case destPort != 0:
		what += fmt.Sprintf(" on port %d", destPort)
	case len(tcpPorts) == 1:
		what += fmt.Sprintf(" on port %d", tcpPorts[0])
	case len(tcpPorts) > 1:
		ps := make([]string, len(tcpPorts))
		for i, p := range tcpPorts {
			ps[i] = fmt.Sprint(p)
		}
		what += " on ports " + strings.Join(ps, ", ")
	default:
		what += " on any port"
	}
	out := fmt.Sprintf("ServiceAccount %s may %s", src, what)
	if len(sources) > 1 {
		var others []smi.Identity
		for _, s := range sources {
			if s != src {
				others = append(others, s)
			}
		}
		out += fmt.Sprintf(" (the same rules apply to %s, which share the TrafficTarget)", identities(others))
	}
	return out
}

// ---------------------------------------------------------------- deny

type denyOptions struct {
	from, to string
	name     string
	dryRun   bool
	output   *string
}

func newDenyCommand(env *clienv.Env) *cobra.Command {
	o := &denyOptions{}
	cmd := &cobra.Command{
		Use:   "deny --from sa/NAMESPACE/NAME --to sa/NAMESPACE/NAME [--name NAME]",
		Short: "Remove every grant from one workload to another",
		Long: `deny takes away what allow gave: afterwards no TrafficTarget in the --to
namespace lists the --from ServiceAccount as a source for the --to
ServiceAccount, so (with Trellis's ACL mode on) its requests are denied.
SMI has no deny rules; access is denied whenever no grant allows it.

For each TrafficTarget whose destination is --to and whose sources include
--from (only the one named --name, if given):
  - if --from is its only source, the TrafficTarget is deleted, together
    with the route objects kubectl-trellis created for it
    (app.kubernetes.io/managed-by=kubectl-trellis); route objects you wrote
    yourself are never deleted, they may be shared;
  - otherwise --from is removed from its sources and the rest keep access.
This includes TrafficTargets you wrote yourself: deny removes the grant
wherever it is, and says which objects it changed (if another tool such as
a GitOps controller owns them, remove the source there too, or it comes
back). Nothing to remove is not an error.`,
		Example: `  # frontend may no longer call api
  kubectl trellis deny --from sa/shop/frontend --to sa/shop/api

  # See what deny would change
  kubectl trellis deny --from sa/shop/frontend --to sa/shop/api --dry-run`,
		Args: noArgs("deny"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), env)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.from, "from", "", "the source ServiceAccount: sa/NAMESPACE/NAME")
	f.StringVar(&o.to, "to", "", "the destination ServiceAccount: sa/NAMESPACE/NAME")
	f.StringVar(&o.name, "name", "", "only change the TrafficTarget with this name")
	f.BoolVar(&o.dryRun, "dry-run", false, "print what would change, without changing it")
	o.output = clienv.OutputFlag(cmd, Text, clienv.YAML, clienv.JSON)
	return cmd
}

// ttPrefix is where a TrafficTarget version keeps destination, sources
// and rules: at the top level in v1alpha1, under spec after.
func ttPrefix(version string) []string {
	if version == "v1alpha1" {
		return nil
	}
	return []string{"spec"}
}

func at(prefix []string, f ...string) []string {
	return append(append([]string(nil), prefix...), f...)
}

func (o *denyOptions) run(ctx context.Context, env *clienv.Env) error {
	src, dst, err := pair(env, o.from, o.to)
	if err != nil {
		return err
	}
	if o.name != "" {
		if errs := validation.IsDNS1123Subdomain(o.name); len(errs) > 0 {
			return clienv.Usagef("--name %q: not a valid object name: %s", o.name, strings.Join(errs, "; "))
		}
	}
	ns := dst.Namespace
	s, err := connect(env)
	if err != nil {
		return err
	}
	if err := s.discover(); err != nil {
		return err
	}
	ttKV, err := s.version(smi.KindTrafficTarget)
	if err != nil {
		return err
	}
	var targets []unstructured.Unstructured
	if o.name != "" {
		u, err := s.get(ctx, ttKV, ns, o.name)
		if err != nil {
			return err
		}
		if u != nil {
			targets = append(targets, *u)
		}
	} else if targets, err = s.list(ctx, ttKV, ns); err != nil {
		return err
	}
	prefix := ttPrefix(ttKV.version)
	rulesField := "rules"
	if ttKV.version == "v1alpha1" {
		rulesField = "specs"
	}
	p := &plan{s: s}
	var routeOps []*op
	var foreign []string
	for i := range targets {
		u := &targets[i]
		if n, _, _ := unstructured.NestedString(u.Object, at(prefix, "destination", "name")...); n != dst.Name {
			continue
		}
		srcs, _, _ := unstructured.NestedSlice(u.Object, at(prefix, "sources")...)
		var keep []any
		for _, x := range srcs {
			m, _ := x.(map[string]any)
			if m["kind"] == "ServiceAccount" && m["name"] == src.Name && m["namespace"] == src.Namespace {
				continue
			}
			keep = append(keep, x)
		}
		if len(keep) == len(srcs) {
			continue
		}
		if !managed(u) {
			foreign = append(foreign, u.GetName())
		}
		if len(keep) > 0 {
			next := u.DeepCopy()
			_ = unstructured.SetNestedSlice(next.Object, keep, at(prefix, "sources")...)
			p.add(&op{action: actUpdate, kv: ttKV, obj: next, note: "source " + src.String() + " removed", why: "to remove the source"})
			continue
		}
		p.add(&op{action: actDelete, kv: ttKV, obj: u, why: "its only source is " + src.String()})
		owner := forValue(smi.KindTrafficTarget, u.GetName())
		rules, _, _ := unstructured.NestedSlice(u.Object, at(prefix, rulesField)...)
		seen := map[string]bool{}
		for _, r := range rules {
			m, _ := r.(map[string]any)
			kind, _ := m["kind"].(string)
			name, _ := m["name"].(string)
			if seen[kind+"/"+name] {
				continue
			}
			seen[kind+"/"+name] = true
			kv, err := s.version(smi.Kind(kind))
			if err != nil || name == "" {
				continue // a kind the cluster does not serve has no objects
			}
			route, err := s.get(ctx, kv, ns, name)
			if err != nil {
				return err
			}
			if route != nil && ownedBy(route, owner) {
				routeOps = append(routeOps, &op{action: actDelete, kv: kv, obj: route, why: "created for TrafficTarget " + u.GetName()})
			}
		}
	}
	for _, r := range routeOps {
		p.add(r)
	}
	if len(p.ops) == 0 {
		if *o.output != Text {
			return clienv.PrintData(env.IO.Out, *o.output, []Change{})
		}
		switch {
		case o.name != "" && len(targets) == 0:
			fmt.Fprintf(env.IO.Out, "nothing to do: TrafficTarget %s/%s does not exist\n", ns, o.name)
		case o.name != "":
			fmt.Fprintf(env.IO.Out, "nothing to do: TrafficTarget %s/%s does not grant ServiceAccount %s access to ServiceAccount %s\n", ns, o.name, src, dst)
		default:
			fmt.Fprintf(env.IO.Out, "nothing to do: no TrafficTarget in namespace %s grants ServiceAccount %s access to ServiceAccount %s\n", ns, src, dst)
		}
		return nil
	}
	if err := p.apply(ctx, o.dryRun); err != nil {
		return err
	}
	s.warnACLOff(ctx, "removing the grant does not block traffic until it is on")
	if len(foreign) > 0 {
		warnf(env, "TrafficTarget %s in namespace %s was not created by kubectl-trellis; if another tool (GitOps) manages it, remove the source there too, or it will come back", strings.Join(foreign, ", "), ns)
	}
	if *o.output != Text {
		changes := make([]Change, 0, len(p.ops))
		for _, op := range p.ops {
			c := Change{Action: op.action, APIVersion: op.kv.apiVersion(), Kind: string(op.kv.info.Kind), Namespace: ns, Name: op.obj.GetName(), Detail: op.note, DryRun: o.dryRun}
			if op.action == actUpdate {
				c.Field = strings.Join(at(prefix, "sources"), ".")
			}
			if c.Detail == "" {
				c.Detail = op.why
			}
			changes = append(changes, c)
		}
		return clienv.PrintData(env.IO.Out, *o.output, changes)
	}
	printOps(env.IO.Out, p, o.dryRun)
	rest := ""
	if o.name != "" {
		rest = " through TrafficTarget " + o.name
	}
	fmt.Fprintf(env.IO.Out, "ServiceAccount %s no longer has access to ServiceAccount %s%s%s\n", src, dst, rest, summaryNote(o.dryRun))
	return nil
}

// Where the controller keeps its settings (manifests/base/configmap.yaml).
const (
	settingsConfigMap = "trellis-controller"
	settingsKey       = "settings.yaml"
)

// warnACLOff warns when the installed controller runs with ACL mode off,
// in which the mesh allows all traffic and TrafficTargets change nothing.
// It is best effort: a ConfigMap that cannot be read says nothing.
func (s *session) warnACLOff(ctx context.Context, consequence string) {
	ns := s.env.MeshNamespace
	cm, err := s.kube.CoreV1().ConfigMaps(ns).Get(ctx, settingsConfigMap, metav1.GetOptions{})
	if err != nil {
		return
	}
	var settings struct {
		ACL *bool `json:"acl"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data[settingsKey]), &settings); err != nil || settings.ACL == nil || *settings.ACL {
		return
	}
	warnf(s.env, "ACL mode is off (ConfigMap %s/%s, %s: acl: false), so the mesh allows all traffic and %s; install with --acl or set acl: true", ns, settingsConfigMap, settingsKey, consequence)
}
