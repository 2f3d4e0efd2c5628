package author

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/smi"
	"github.com/trellis-mesh/trellis/smi/annotations"
	"github.com/trellis-mesh/trellis/smi/match"
)

type splitOptions struct {
	to       []string
	matches  []string
	name     string
	relative bool
	dryRun   bool
	output   *string
}

func newSplitCommand(env *clienv.Env) *cobra.Command {
	o := &splitOptions{}
	cmd := &cobra.Command{
		Use:   "split SERVICE --to BACKEND=WEIGHT,... [--match KIND:VALUE]...",
		Short: "Split a Service's traffic between backend Services (SMI TrafficSplit)",
		Long: `split creates or updates the SMI TrafficSplit for the root Service SERVICE:
clients keep calling SERVICE (through the mesh), and the node proxies send
each backend Service its share of the requests or connections.

--to lists the backends and their weights. Weights are whole numbers that
add up to 100 (percent); with --relative they may be any non-negative
numbers and each backend gets weight/sum (SMI's own meaning). Each backend
must be an existing Service in the same namespace that exposes the root
Service's ports. The root Service may be a backend too (its share goes to
its own endpoints), but not the only one.

--match limits the split to matching HTTP requests; everything else goes to
SERVICE itself. Conditions are ANDed into one match:
  header:NAME=REGEX   the header is present and its value matches REGEX
  header:NAME         the header is present
  path:REGEX          the URL path (without the query) matches REGEX
  method:GET[,HEAD]   the method is one of these (case-sensitive)
Regular expressions are RE2, anchored at the start only (path:/api matches
/api/v1). The conditions go into an HTTPRouteGroup named SPLIT-match, which
the split references.

The TrafficSplit is named after SERVICE (or --name). If SERVICE already has
a TrafficSplit, that one is updated in place and keeps its name, whoever
created it. Objects are written in the newest SMI version the cluster serves.
Everything is checked first (flags, Services, the SMI rules Trellis applies,
your permissions); a mistake changes nothing.`,
		Example: `  # Canary: 90% of web's traffic to web-v1, 10% to web-v2
  kubectl trellis split web --to web-v1=90,web-v2=10

  # Only requests with the header x-canary: true go to web-v2
  kubectl trellis split web --to web-v2=100 --match header:x-canary=true

  # Split GET requests under /api/ in thirds
  kubectl trellis split api --to api-a=1,api-b=1,api-c=1 --relative --match method:GET --match path:/api/

  # Print the objects instead of applying them
  kubectl trellis split web --to web-v1=50,web-v2=50 --dry-run -o yaml`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return clienv.Usagef("split takes one SERVICE (the root Service clients call), got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), env, args[0])
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.to, "to", nil, "backend Services and weights: BACKEND=WEIGHT,... (weights add up to 100 unless --relative)")
	f.StringArrayVar(&o.matches, "match", nil, "only split HTTP requests that match: header:NAME=REGEX, header:NAME, path:REGEX, method:GET[,HEAD] (repeatable; ANDed)")
	f.StringVar(&o.name, "name", "", "name of a new TrafficSplit (default: SERVICE); an existing split for SERVICE keeps its name")
	f.BoolVar(&o.relative, "relative", false, "weights are relative (each backend gets weight/sum) instead of percentages")
	f.BoolVar(&o.dryRun, "dry-run", false, "check everything and print what would change, without changing it")
	o.output = clienv.OutputFlag(cmd, Text, clienv.YAML, clienv.JSON)
	return cmd
}

// splitMatchName names the single match in a split's HTTPRouteGroup.
const splitMatchName = "split"

func (o *splitOptions) run(ctx context.Context, env *clienv.Env, root string) error {
	ns, _, err := env.Namespace()
	if err != nil {
		return err
	}
	if err := checkServiceName("SERVICE", root); err != nil {
		return err
	}
	backends, err := parseBackends(o.to, root, o.relative)
	if err != nil {
		return err
	}
	var spec *match.HTTPSpec
	if len(o.matches) > 0 {
		m, err := parseMatches(o.matches)
		if err != nil {
			return err
		}
		m.Name = splitMatchName
		spec = &m
	}
	if o.name != "" {
		if errs := validation.IsDNS1123Subdomain(o.name); len(errs) > 0 {
			return clienv.Usagef("--name %q: not a valid object name: %s", o.name, strings.Join(errs, "; "))
		}
	}

	s, err := connect(env)
	if err != nil {
		return err
	}
	if err := s.discover(); err != nil {
		return err
	}
	tsKV, err := s.version(smi.KindTrafficSplit)
	if err != nil {
		return err
	}
	var grpKV kindVersion
	if spec != nil {
		if grpKV, err = s.version(smi.KindHTTPRouteGroup); err != nil {
			return err
		}
	}

	// The Services: the root and every backend must exist.
	svcList, err := s.kube.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return clienv.APIError("list Services in namespace "+ns, err)
	}
	services := map[string]*corev1.Service{}
	var svcs []*corev1.Service
	for i := range svcList.Items {
		services[svcList.Items[i].Name] = &svcList.Items[i]
		svcs = append(svcs, &svcList.Items[i])
	}
	if services[root] == nil {
		return clienv.Fail(clienv.ExitNotFound, fmt.Errorf("there is no Service %s/%s (SERVICE, the root of the split)", ns, root), "check the name, or pass -n NAMESPACE")
	}
	var missing, missingArgs []string
	for _, b := range backends {
		if services[b.Service] == nil {
			missing = append(missing, ns+"/"+b.Service)
			missingArgs = append(missingArgs, fmt.Sprintf("%s=%d", b.Service, b.Weight))
		}
	}
	if len(missing) == 1 {
		return clienv.Fail(clienv.ExitNotFound, fmt.Errorf("there is no Service %s (--to %s)", missing[0], missingArgs[0]), "create the backend Service first, or fix the name")
	} else if len(missing) > 1 {
		return clienv.Fail(clienv.ExitNotFound, fmt.Errorf("there are no Services %s (--to %s)", strings.Join(missing, ", "), strings.Join(missingArgs, ",")), "create the backend Services first, or fix the names")
	}

	// The split to update, if SERVICE already has one; otherwise the name
	// of the new one.
	items, err := s.list(ctx, tsKV, ns)
	if err != nil {
		return err
	}
	existing, name, others, err := o.pickSplit(items, ns, root)
	if err != nil {
		return err
	}
	owner := forValue(smi.KindTrafficSplit, name)
	p := &plan{s: s}

	// The HTTPRouteGroup for --match.
	var grp *unstructured.Unstructured
	grpName := splitGroupName(name)
	var warnings []smi.Problem
	if spec != nil {
		desired := newObject(smi.KindHTTPRouteGroup, ns, grpName)
		desired.SetLabels(map[string]string{ManagedByLabel: ManagedBy})
		desired.SetAnnotations(map[string]string{ForAnnotation: owner})
		_ = unstructured.SetNestedSlice(desired.Object, []any{httpMatchObject(*spec)}, "spec", "matches")
		built, ps, err := materialize(desired, grpKV, stashLoss{"headers": "--match header:... (HTTPRouteGroup headers need specs.smi-spec.io/v1alpha2 or newer)"})
		if err != nil {
			return err
		}
		warnings = append(warnings, ps...)
		cur, err := s.get(ctx, grpKV, ns, grpName)
		if err != nil {
			return err
		}
		if cur != nil && !ownedBy(cur, owner) {
			return clienv.Usagef("HTTPRouteGroup %s/%s already exists and was not created by kubectl-trellis for TrafficSplit %s; rename or delete it, then run split again", ns, grpName, name)
		}
		grp = built
		p.add(changeOp(grpKV, cur, built, "for --match"))
	}

	// The TrafficSplit.
	desired := newObject(smi.KindTrafficSplit, ns, name)
	var bs []any
	for _, b := range backends {
		bs = append(bs, map[string]any{"service": b.Service, "weight": b.Weight})
	}
	_ = unstructured.SetNestedField(desired.Object, root, "spec", "service")
	_ = unstructured.SetNestedSlice(desired.Object, bs, "spec", "backends")
	if spec != nil {
		_ = unstructured.SetNestedSlice(desired.Object, []any{map[string]any{"kind": string(smi.KindHTTPRouteGroup), "apiGroup": smi.GroupSpecs, "name": grpName}}, "spec", "matches")
	}
	if existing == nil {
		desired.SetLabels(map[string]string{ManagedByLabel: ManagedBy})
	}
	built, ps, err := materialize(desired, tsKV, stashLoss{"spec.matches": "--match (TrafficSplit matches need split.smi-spec.io/v1alpha3 or newer)"})
	if err != nil {
		return err
	}
	warnings = append(warnings, ps...)
	p.add(changeOp(tsKV, existing, built, ""))

	// Groups the CLI made for this split earlier that it no longer uses.
	if prev, ok := decodeSplit(existing); ok && len(prev.Matches) > 0 {
		if grpKV.version == "" {
			if grpKV, err = s.version(smi.KindHTTPRouteGroup); err != nil {
				return err
			}
		}
		for _, g := range prev.Matches {
			if spec != nil && g == grpName {
				continue
			}
			old, err := s.get(ctx, grpKV, ns, g)
			if err != nil {
				return err
			}
			if old != nil && ownedBy(old, owner) {
				p.add(&op{action: actDelete, kv: grpKV, obj: old, why: "no longer used by the split"})
			}
		}
	}

	// What Trellis will make of it: the controller's own cross-object
	// checks, for the objects written here.
	warnings = append(warnings, policyWarnings(ns, items, existing, built, grp, svcs)...)
	for _, other := range others {
		warnings = append(warnings, smi.Problem{Severity: smi.Warning, Object: smi.Ref{Kind: smi.KindTrafficSplit, Namespace: ns, Name: other},
			Field: "spec.service", Message: fmt.Sprintf("also splits Service %q and is ignored (the oldest split wins); this command updates TrafficSplit %s", root, name),
			Fix: "delete it: kubectl delete trafficsplits.split.smi-spec.io -n " + ns + " " + other})
	}
	if err := p.apply(ctx, o.dryRun); err != nil {
		return err
	}
	// Warnings only once the command succeeded: a failure is one line.
	warn(env, dedupeProblems(warnings))
	if meshed, known := s.meshed(ctx, services[root]); known && !meshed {
		warnf(env, "Service %s/%s is not in the mesh, so the split has no effect until it joins: kubectl trellis join %s -n %s", ns, root, root, ns)
	}
	if *o.output != Text {
		return printObjects(env.IO.Out, *o.output, p, o.dryRun)
	}
	printOps(env.IO.Out, p, o.dryRun)
	fmt.Fprintln(env.IO.Out, describeSplit(ns, root, backends, spec)+summaryNote(o.dryRun))
	return nil
}

// pickSplit finds the TrafficSplit to update: the one Trellis applies to
// root (the oldest), or none; and the name to use. others are further
// splits of root, which Trellis ignores.
func (o *splitOptions) pickSplit(items []unstructured.Unstructured, ns, root string) (existing *unstructured.Unstructured, name string, others []string, err error) {
	type cand struct {
		u  *unstructured.Unstructured
		ts *smi.TrafficSplit
	}
	var forRoot []cand
	byName := map[string]*smi.TrafficSplit{}
	for i := range items {
		ts, ok := decodeSplit(&items[i])
		if !ok {
			continue
		}
		byName[items[i].GetName()] = ts
		if ts.Service == root {
			forRoot = append(forRoot, cand{&items[i], ts})
		}
	}
	sort.Slice(forRoot, func(i, j int) bool {
		a, b := forRoot[i].ts, forRoot[j].ts
		if !a.Created.Equal(b.Created) {
			return a.Created.Before(b.Created)
		}
		return a.Name < b.Name
	})
	if len(forRoot) > 0 {
		w := forRoot[0]
		if o.name != "" && o.name != w.u.GetName() {
			return nil, "", nil, clienv.Usagef("--name %s: Service %s/%s is already split by TrafficSplit %s, and a second split for it would be ignored (the oldest wins); run split without --name to update %s", o.name, ns, root, w.u.GetName(), w.u.GetName())
		}
		for _, c := range forRoot[1:] {
			others = append(others, c.u.GetName())
		}
		return w.u.DeepCopy(), w.u.GetName(), others, nil
	}
	name = o.name
	if name == "" {
		name = root
	}
	if ts, ok := byName[name]; ok {
		return nil, "", nil, clienv.Usagef("TrafficSplit %s/%s already exists and splits Service %q; pass --name to give the split for %s another name", ns, name, ts.Service, root)
	}
	return nil, name, nil, nil
}

func decodeSplit(u *unstructured.Unstructured) (*smi.TrafficSplit, bool) {
	if u == nil {
		return nil, false
	}
	obj, _ := smi.Decode(u)
	ts, ok := obj.(*smi.TrafficSplit)
	return ts, ok && ts != nil
}

// changeOp compares the desired object with the current one (nil: absent)
// and returns the write that makes the cluster match: create, update (the
// current object with its content replaced, so its metadata stays), or
// nothing.
func changeOp(kv kindVersion, cur, desired *unstructured.Unstructured, why string) *op {
	if cur == nil {
		return &op{action: actCreate, kv: kv, obj: desired, why: why}
	}
	if sameJSON(content(cur), content(desired)) && labelsIncluded(cur, desired) {
		return &op{action: actUnchanged, kv: kv, obj: cur, why: why}
	}
	next := cur.DeepCopy()
	setContent(next, desired)
	if l := desired.GetLabels(); len(l) > 0 {
		merged := next.GetLabels()
		if merged == nil {
			merged = map[string]string{}
		}
		for k, v := range l {
			merged[k] = v
		}
		next.SetLabels(merged)
	}
	if a := desired.GetAnnotations(); len(a) > 0 {
		merged := next.GetAnnotations()
		if merged == nil {
			merged = map[string]string{}
		}
		for k, v := range a {
			merged[k] = v
		}
		next.SetAnnotations(merged)
	}
	return &op{action: actUpdate, kv: kv, obj: next, why: why}
}

// labelsIncluded reports whether cur already has desired's labels and
// annotations.
func labelsIncluded(cur, desired *unstructured.Unstructured) bool {
	for k, v := range desired.GetLabels() {
		if cur.GetLabels()[k] != v {
			return false
		}
	}
	for k, v := range desired.GetAnnotations() {
		if cur.GetAnnotations()[k] != v {
			return false
		}
	}
	return true
}

// httpMatchObject is an HTTPRouteGroup match in the SMI wire form (headers
// as a list of single-entry maps).
func httpMatchObject(spec match.HTTPSpec) map[string]any {
	m := map[string]any{"name": spec.Name}
	if spec.PathRegex != "" {
		m["pathRegex"] = spec.PathRegex
	}
	if len(spec.Methods) > 0 {
		ms := make([]any, len(spec.Methods))
		for i, x := range spec.Methods {
			ms[i] = x
		}
		m["methods"] = ms
	}
	if len(spec.Headers) > 0 {
		hs := make([]any, len(spec.Headers))
		for i, h := range spec.Headers {
			hs[i] = map[string]any{h.Name: h.Value}
		}
		m["headers"] = hs
	}
	return m
}

// policyWarnings runs smi.NewPolicy over the namespace's splits (with the
// new split in place of the one it replaces), the new group and the
// Services, and returns the problems about the objects this command writes:
// a backend without the root's port, a backend that is itself split, ...
func policyWarnings(ns string, items []unstructured.Unstructured, existing, split, grp *unstructured.Unstructured, svcs []*corev1.Service) []smi.Problem {
	var objs []smi.Object
	add := func(u *unstructured.Unstructured) {
		if u == nil {
			return
		}
		if o, _ := smi.Decode(u); o != nil {
			objs = append(objs, o)
		}
	}
	// The new split first, backdated, so it wins over any other split of
	// its root as the one it replaces did.
	newSplit := split.DeepCopy()
	newSplit.SetNamespace(ns)
	if existing != nil {
		newSplit.SetCreationTimestamp(existing.GetCreationTimestamp())
	} else {
		newSplit.SetCreationTimestamp(metav1.Unix(1, 0))
	}
	add(newSplit)
	add(grp)
	for i := range items {
		if items[i].GetName() != split.GetName() {
			add(&items[i])
		}
	}
	mine := map[smi.Ref]bool{{Kind: smi.KindTrafficSplit, Namespace: ns, Name: split.GetName()}: true}
	if grp != nil {
		mine[smi.Ref{Kind: smi.KindHTTPRouteGroup, Namespace: ns, Name: grp.GetName()}] = true
	}
	var out []smi.Problem
	for _, p := range smi.NewPolicy(objs, svcs).Problems() {
		if mine[p.Object] {
			out = append(out, p)
		}
	}
	return out
}

func dedupeProblems(ps []smi.Problem) []smi.Problem {
	seen := map[string]bool{}
	var out []smi.Problem
	for _, p := range ps {
		if !seen[p.String()] {
			seen[p.String()] = true
			out = append(out, p)
		}
	}
	return out
}

// meshed reports whether svc is in the mesh; known is false when that
// cannot be told (the namespace cannot be read and the Service does not
// say).
func (s *session) meshed(ctx context.Context, svc *corev1.Service) (meshed, known bool) {
	nsObj, err := s.kube.CoreV1().Namespaces().Get(ctx, svc.Namespace, metav1.GetOptions{})
	if err != nil {
		nsObj = nil
		if _, ok := svc.Annotations[annotations.Mesh]; !ok {
			return false, false
		}
	}
	m, _, _ := annotations.Meshed(svc, nsObj)
	return m, true
}

// describeSplit says in one sentence where the root's traffic goes.
func describeSplit(ns, root string, backends []smi.Backend, spec *match.HTTPSpec) string {
	var sum int64
	for _, b := range backends {
		sum += b.Weight
	}
	var shares []string
	for _, b := range backends {
		pct := float64(b.Weight) * 100 / float64(sum)
		shares = append(shares, strconv.FormatFloat(float64(int64(pct*10+0.5))/10, 'f', -1, 64)+"% to "+b.Service)
	}
	if spec == nil {
		return fmt.Sprintf("Service %s/%s: %s", ns, root, strings.Join(shares, ", "))
	}
	which := "every HTTP request"
	if d := describeMatch(*spec); d != "" {
		which = "HTTP requests with " + d
	}
	return fmt.Sprintf("Service %s/%s: %s: %s; all other traffic to %s itself", ns, root, which, strings.Join(shares, ", "), root)
}
