package smi

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"

	accessv1alpha1 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha1"
	accessv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha2"
	accessv1alpha3 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/access/v1alpha3"
	specsv1alpha1 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/specs/v1alpha1"
	specsv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/specs/v1alpha2"
	specsv1alpha3 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/specs/v1alpha3"
	specsv1alpha4 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/specs/v1alpha4"
	splitv1alpha1 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split/v1alpha1"
	splitv1alpha2 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split/v1alpha2"
	splitv1alpha3 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split/v1alpha3"
	splitv1alpha4 "github.com/servicemeshinterface/smi-sdk-go/pkg/apis/split/v1alpha4"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/trellis-mesh/trellis/smi/internal/schemacheck"
	"github.com/trellis-mesh/trellis/smi/match"
)

// Scheme knows every smi-sdk-go type Trellis reads (all versions).
var Scheme = runtime.NewScheme()

func init() {
	for _, add := range []func(*runtime.Scheme) error{
		splitv1alpha1.AddToScheme, splitv1alpha2.AddToScheme, splitv1alpha3.AddToScheme, splitv1alpha4.AddToScheme,
		accessv1alpha1.AddToScheme, accessv1alpha2.AddToScheme, accessv1alpha3.AddToScheme,
		specsv1alpha1.AddToScheme, specsv1alpha2.AddToScheme, specsv1alpha3.AddToScheme, specsv1alpha4.AddToScheme,
	} {
		if err := add(Scheme); err != nil {
			panic(err)
		}
	}
}

// DecodeTyped decodes a typed smi-sdk-go object of any version (as a
// generated informer returns it, possibly with an empty TypeMeta).
func DecodeTyped(obj runtime.Object) (Object, []Problem) {
	gvks, _, err := Scheme.ObjectKinds(obj)
	if err != nil || len(gvks) == 0 {
		return nil, []Problem{{Severity: Error, Message: fmt.Sprintf("%T is not an smi-sdk-go type Trellis reads", obj)}}
	}
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, []Problem{{Severity: Error, Message: fmt.Sprintf("converting %T: %v", obj, err)}}
	}
	u := &unstructured.Unstructured{Object: content}
	u.SetGroupVersionKind(gvks[0])
	return Decode(u)
}

// DecodeYAML decodes a stream of YAML or JSON documents (as `kubectl apply
// -f` takes). SMI objects are decoded; Services are returned as such (the
// policy needs them); anything else is returned in others.
func DecodeYAML(r io.Reader) (objs []Object, svcs []*corev1.Service, others []*unstructured.Unstructured, ps []Problem, err error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	for i := 0; ; i++ {
		var raw map[string]any
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, svcs, others, ps, nil
			}
			return objs, svcs, others, ps, fmt.Errorf("document %d: %w", i+1, err)
		}
		if len(raw) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: normalizeJSON(raw).(map[string]any)}
		switch {
		case u.GetAPIVersion() == "v1" && u.GetKind() == "Service":
			svc := &corev1.Service{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, svc); err != nil {
				return objs, svcs, others, ps, fmt.Errorf("document %d: Service %s/%s: %w", i+1, u.GetNamespace(), u.GetName(), err)
			}
			svcs = append(svcs, svc)
		case isSMI(u):
			o, p := Decode(u)
			ps = append(ps, p...)
			if o != nil {
				objs = append(objs, o)
			}
		default:
			others = append(others, u)
		}
	}
}

func isSMI(u *unstructured.Unstructured) bool {
	g := u.GroupVersionKind().Group
	return g == GroupSplit || g == GroupAccess || g == GroupSpecs || (g == "" && u.GetAPIVersion() == "" && isSMIKind(u.GetKind()))
}

func isSMIKind(k string) bool {
	_, ok := Info(Kind(k))
	return ok
}

// Decode reads one SMI object of any version Trellis knows into the model.
// It returns nil only when the object cannot be identified (unknown kind or
// version); otherwise it returns the object, with Meta.Invalid set when a
// problem of severity Error disables it. u is not modified.
func Decode(u *unstructured.Unstructured) (Object, []Problem) {
	ref := Ref{Kind: Kind(u.GetKind()), Namespace: u.GetNamespace(), Name: u.GetName()}
	ps := &problems{ref: ref}
	ki, version, err := LookupGVK(u.GetAPIVersion(), u.GetKind())
	if err != nil {
		field := "apiVersion"
		if ki.Kind == "" {
			field = "kind"
		}
		msg := err.Error()
		if i := strings.Index(msg, ": "); i >= 0 && strings.HasPrefix(msg, field) {
			msg = msg[i+2:]
		}
		ps.errorf(field, "use one of the SMI versions listed in docs/smi.md", "%s", msg)
		return nil, ps.out
	}
	meta := Meta{
		Ref:        ref,
		APIVersion: ki.Group + "/" + version,
		UID:        string(u.GetUID()),
		Generation: u.GetGeneration(),
		Created:    u.GetCreationTimestamp().UTC(),
	}
	if ref.Name == "" {
		ps.errorf("metadata.name", "give the object a name", "is empty")
	}
	if ref.Namespace == "" {
		ps.errorf("metadata.namespace", "set metadata.namespace (kubectl fills in the current namespace when applying)", "is empty; SMI objects are namespaced")
	}
	raw := normalizeJSON(u.UnstructuredContent()).(map[string]any)
	d := &decoder{ki: ki, version: version, raw: raw, ps: ps, explained: map[string]bool{}}
	var obj Object
	switch ki.Kind {
	case KindTrafficSplit:
		obj = d.trafficSplit(meta)
	case KindTrafficTarget:
		obj = d.trafficTarget(meta)
	case KindHTTPRouteGroup:
		obj = d.httpRouteGroup(meta)
	case KindTCPRoute:
		m := d.portRoute(meta)
		obj = &TCPRoute{Meta: meta, Match: m}
	case KindUDPRoute:
		m := d.portRoute(meta)
		obj = &UDPRoute{Meta: meta, Match: m}
	}
	if HasErrors(ps.out) {
		obj.GetMeta().Invalid = true
	}
	SortProblems(ps.out)
	return obj, ps.out
}

type decoder struct {
	ki         KindInfo
	version    string
	raw        map[string]any
	ps         *problems
	explained  map[string]bool // unknown-field paths already reported with a better message
	schemaBad  bool
	schemaErrs []string
}

func (d *decoder) apiVersion() string { return d.ki.Group + "/" + d.version }

// schema runs the CRD schema and CEL rules over the raw object and reports
// what they find. Unknown fields are warnings, except in TrafficTargets,
// where ignoring a field could grant more than the author meant.
func (d *decoder) schema() {
	gvk := schema.GroupVersionKind{Group: d.ki.Group, Version: d.version, Kind: string(d.ki.Kind)}
	res, ok, err := schemacheck.Check(gvk, d.raw)
	if err != nil {
		d.ps.errorf("", "report this as a Trellis bug", "could not be checked against the %s schema: %v", d.apiVersion(), err)
		d.schemaBad = true
		return
	}
	if !ok {
		return
	}
	// Paths with a type error: CEL rules and unknown-field checks below
	// them only repeat the same mistake.
	var typeBad []string
	for _, e := range res.Errors {
		if e.Type == field.ErrorTypeTypeInvalid {
			typeBad = append(typeBad, e.Field)
		}
	}
	under := func(p string) bool {
		for _, t := range typeBad {
			if p == t || strings.HasPrefix(p, t+".") || strings.HasPrefix(p, t+"[") {
				return true
			}
		}
		return false
	}
	for _, f := range res.Unknown {
		if d.explained[f] || f == "status" || strings.HasPrefix(f, "status.") || under(f) {
			continue
		}
		if d.ki.Kind == KindTrafficTarget {
			d.ps.errorf(f, "remove it or check its spelling against docs/smi.md", "is not a field of %s %s; the TrafficTarget is disabled rather than applied without it", d.apiVersion(), d.ki.Kind)
		} else {
			d.ps.warnf(f, "remove it or check its spelling against docs/smi.md", "is not a field of %s %s and is ignored", d.apiVersion(), d.ki.Kind)
		}
	}
	for _, e := range res.Errors {
		d.schemaBad = true
		if e.Type == field.ErrorTypeRequired && d.explained["required:"+e.Field] {
			continue
		}
		if e.Type != field.ErrorTypeTypeInvalid && under(e.Field) {
			continue
		}
		d.schemaErrs = append(d.schemaErrs, e.Field)
		d.ps.errorf(e.Field, "", "%s", fieldErrorMessage(e))
	}
}

// reported reports whether the schema already found an error at path.
func (d *decoder) reported(path string) bool {
	for _, f := range d.schemaErrs {
		if f == path {
			return true
		}
	}
	return false
}

func fieldErrorMessage(e *field.Error) string {
	switch e.Type {
	case field.ErrorTypeRequired:
		if e.Detail != "" {
			return "is required: " + e.Detail
		}
		return "is required"
	case field.ErrorTypeNotSupported:
		return "must be one of the supported values: " + e.Detail
	case field.ErrorTypeTypeInvalid:
		return "has the wrong type: " + e.Detail
	}
	if e.Detail != "" {
		if e.Type == field.ErrorTypeInvalid {
			switch v := e.BadValue.(type) {
			case string, int64, int, float64, bool:
				if s := fmt.Sprint(v); s != "" && s != "integer" && s != "string" && s != "object" && s != "array" && !strings.Contains(e.Detail, s) && len(s) < 80 {
					return fmt.Sprintf("%s (got %v)", e.Detail, v)
				}
			}
		}
		return e.Detail
	}
	return e.ErrorBody()
}

// convert fills a typed smi-sdk-go object from the raw content. Unknown
// fields were already reported by schema(), so they are not errors here.
func (d *decoder) convert(into any) bool {
	clean := pruneForSDK(d.raw)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(clean, into); err != nil {
		if !d.schemaBad { // a schema error already explains it better
			d.ps.errorf("", "compare the object with the examples in docs/smi.md", "does not have the shape of %s %s: %v", d.apiVersion(), d.ki.Kind, err)
		}
		return false
	}
	return true
}

// pruneForSDK drops metadata fields the SDK does not need and which could
// fail conversion (managedFields timestamps are fine, but keep it small).
func pruneForSDK(raw map[string]any) map[string]any {
	out := make(map[string]any, len(raw))
	for k, v := range raw {
		if k == "metadata" || k == "status" {
			continue
		}
		out[k] = v
	}
	return out
}

// ---------------------------------------------------------------- TrafficSplit

func (d *decoder) trafficSplit(meta Meta) Object {
	ts := &TrafficSplit{Meta: meta}
	d.misplaced(d.version, []string{"service", "backends"}, "spec.")
	d.schema()
	type backend struct {
		service string
		weight  int64
		quant   *resource.Quantity
	}
	var bs []backend
	switch d.version {
	case "v1alpha1":
		var o splitv1alpha1.TrafficSplit
		if !d.convert(&o) {
			return ts
		}
		ts.Service = o.Spec.Service
		for _, b := range o.Spec.Backends {
			bs = append(bs, backend{service: b.Service, quant: b.Weight})
		}
	case "v1alpha2":
		var o splitv1alpha2.TrafficSplit
		if !d.convert(&o) {
			return ts
		}
		ts.Service = o.Spec.Service
		for _, b := range o.Spec.Backends {
			bs = append(bs, backend{service: b.Service, weight: int64(b.Weight)})
		}
	case "v1alpha3":
		var o splitv1alpha3.TrafficSplit
		if !d.convert(&o) {
			return ts
		}
		ts.Service = o.Spec.Service
		for _, b := range o.Spec.Backends {
			bs = append(bs, backend{service: b.Service, weight: int64(b.Weight)})
		}
		ts.Matches = d.splitMatches(o.Spec.Matches)
	case "v1alpha4":
		var o splitv1alpha4.TrafficSplit
		if !d.convert(&o) {
			return ts
		}
		ts.Service = o.Spec.Service
		for _, b := range o.Spec.Backends {
			bs = append(bs, backend{service: b.Service, weight: int64(b.Weight)})
		}
		ts.Matches = d.splitMatches(o.Spec.Matches)
	}
	if d.version == "v1alpha1" {
		// Quantities: keep whole numbers as they are; if any weight is
		// fractional, express every weight in thousandths so the ratios
		// survive.
		milli := false
		for i, b := range bs {
			if b.quant == nil {
				d.ps.errorf(fmt.Sprintf("spec.backends[%d].weight", i), "give every backend a weight (0 sends it no traffic)", "is missing")
				continue
			}
			if b.quant.Sign() < 0 {
				d.ps.errorf(fmt.Sprintf("spec.backends[%d].weight", i), "use 0 to send a backend no traffic", "%s is negative", b.quant.String())
			}
			if _, ok := b.quant.AsInt64(); !ok {
				milli = true
			}
		}
		for i := range bs {
			if bs[i].quant == nil {
				continue
			}
			if milli {
				if bs[i].quant.Cmp(*resource.NewScaledQuantity(bs[i].quant.MilliValue(), resource.Milli)) != 0 {
					d.ps.warnf(fmt.Sprintf("spec.backends[%d].weight", i), "use whole numbers or thousandths (m)", "%s is finer than 1m and was rounded up to %dm", bs[i].quant.String(), bs[i].quant.MilliValue())
				}
				bs[i].weight = bs[i].quant.MilliValue()
			} else {
				bs[i].weight, _ = bs[i].quant.AsInt64()
			}
		}
	}
	if ts.Service == "" && !d.schemaBad {
		d.ps.errorf("spec.service", "name the root Service the split applies to", "is empty")
	}
	if len(bs) == 0 && !d.schemaBad {
		d.ps.errorf("spec.backends", "list at least one backend Service with a weight", "is empty")
	}
	seen := map[string]int{}
	for i, b := range bs {
		if b.weight < 0 && d.version != "v1alpha1" && !d.schemaBad {
			d.ps.errorf(fmt.Sprintf("spec.backends[%d].weight", i), "use 0 to send a backend no traffic", "%d is negative", b.weight)
		}
		if j, dup := seen[b.service]; dup {
			d.ps.warnf(fmt.Sprintf("spec.backends[%d].service", i), "list each backend once", "%q is also backends[%d]; both entries count, so its weights add up", b.service, j)
		} else {
			seen[b.service] = i
		}
		ts.Backends = append(ts.Backends, Backend{Service: b.service, Weight: b.weight})
	}
	return ts
}

func (d *decoder) splitMatches(refs []corev1.TypedLocalObjectReference) []string {
	var out []string
	seen := map[string]bool{}
	for i, r := range refs {
		path := fmt.Sprintf("spec.matches[%d]", i)
		if r.Kind != string(KindHTTPRouteGroup) {
			if !d.schemaBad {
				d.ps.errorf(path+".kind", "reference an HTTPRouteGroup", "%q is not supported; a TrafficSplit can only match HTTPRouteGroups", r.Kind)
			}
			continue
		}
		if r.APIGroup != nil && *r.APIGroup != "" && *r.APIGroup != GroupSpecs && !d.schemaBad {
			d.ps.errorf(path+".apiGroup", "use specs.smi-spec.io or omit apiGroup", "%q is not the SMI specs group", *r.APIGroup)
		}
		if seen[r.Name] {
			d.ps.warnf(path+".name", "list each HTTPRouteGroup once", "%q is listed twice", r.Name)
			continue
		}
		seen[r.Name] = true
		out = append(out, r.Name)
	}
	return out
}

// misplaced reports fields written at the top level that the version
// expects under spec (want "spec.") or the other way round (want ""). A
// field may be renamed on the way: "specs=rules" means top-level specs
// belongs under spec.rules.
func (d *decoder) misplaced(version string, fields []string, want string) {
	spec, _ := d.raw["spec"].(map[string]any)
	for _, f := range fields {
		f, to, _ := strings.Cut(f, "=")
		if to == "" {
			to = f
		}
		if want == "spec." {
			if _, top := d.raw[f]; top {
				d.explained[f] = true
				d.explained["required:spec"] = true
				d.explained["required:spec."+to] = true
				d.ps.errorf(f, fmt.Sprintf("move %s under spec: as spec.%s", f, to), "is at the top level, but in %s it belongs under spec.%s (the top-level form is from an older SMI version, and the %s schema rejects it)", d.apiVersion(), to, version)
			}
		} else if spec != nil {
			if _, under := spec[f]; under {
				d.explained["spec"] = true
				d.explained["spec."+f] = true
				d.explained["required:"+f] = true
				d.ps.errorf("spec."+f, fmt.Sprintf("move %s to the top level, or use the newest apiVersion (%s/%s) which has spec", f, d.ki.Group, d.ki.Newest()), "is under spec, but in %s %s belongs at the top level (spec is from a newer SMI version)", d.apiVersion(), f)
			}
		}
	}
}

// --------------------------------------------------------------- TrafficTarget

func (d *decoder) trafficTarget(meta Meta) Object {
	tt := &TrafficTarget{Meta: meta}
	type subject struct {
		kind, name, namespace string
		port                  *int
	}
	type rule struct {
		kind, name string
		matches    []string
	}
	var dst subject
	var srcs []subject
	var rules []rule
	rulesField := "spec.rules"
	prefix := "spec."
	switch d.version {
	case "v1alpha1":
		prefix = ""
		rulesField = "specs"
		d.misplaced(d.version, []string{"destination", "sources", "specs"}, "")
		d.schema()
		var o accessv1alpha1.TrafficTarget
		if !d.convert(&o) {
			return tt
		}
		dst = subject{o.Destination.Kind, o.Destination.Name, o.Destination.Namespace, nil}
		if o.Destination.Port != 0 {
			p := o.Destination.Port
			dst.port = &p
		}
		for _, s := range o.Sources {
			srcs = append(srcs, subject{kind: s.Kind, name: s.Name, namespace: s.Namespace})
		}
		for _, r := range o.Specs {
			rules = append(rules, rule{r.Kind, r.Name, r.Matches})
		}
	case "v1alpha2":
		d.misplaced(d.version, []string{"destination", "sources", "rules", "specs=rules"}, "spec.")
		d.renamed("specs", "rules")
		d.schema()
		var o accessv1alpha2.TrafficTarget
		if !d.convert(&o) {
			return tt
		}
		dst = subject{o.Spec.Destination.Kind, o.Spec.Destination.Name, o.Spec.Destination.Namespace, o.Spec.Destination.Port}
		for _, s := range o.Spec.Sources {
			srcs = append(srcs, subject{kind: s.Kind, name: s.Name, namespace: s.Namespace})
		}
		for _, r := range o.Spec.Rules {
			rules = append(rules, rule{r.Kind, r.Name, r.Matches})
		}
	case "v1alpha3":
		d.misplaced(d.version, []string{"destination", "sources", "rules", "specs=rules"}, "spec.")
		d.renamed("specs", "rules")
		d.schema()
		var o accessv1alpha3.TrafficTarget
		if !d.convert(&o) {
			return tt
		}
		dst = subject{kind: o.Spec.Destination.Kind, name: o.Spec.Destination.Name, namespace: o.Spec.Destination.Namespace}
		// Trellis keeps destination.port in v1alpha3 (its CRD declares it)
		// so that v1alpha2 objects convert without losing it.
		if p, ok := nestedInt(d.raw, "spec", "destination", "port"); ok {
			pi := int(p)
			dst.port = &pi
		}
		for _, s := range o.Spec.Sources {
			srcs = append(srcs, subject{kind: s.Kind, name: s.Name, namespace: s.Namespace})
		}
		for _, r := range o.Spec.Rules {
			rules = append(rules, rule{r.Kind, r.Name, r.Matches})
		}
	}
	bad := d.schemaBad
	// Destination.
	if !bad && dst.kind != "ServiceAccount" {
		d.ps.errorf(prefix+"destination.kind", "use kind: ServiceAccount", "%q is not supported; SMI access control identifies workloads by ServiceAccount", dst.kind)
	}
	if !bad && dst.name == "" {
		d.ps.errorf(prefix+"destination.name", "name the destination ServiceAccount", "is empty")
	}
	if dst.namespace != "" && dst.namespace != meta.Namespace {
		d.ps.errorf(prefix+"destination.namespace", fmt.Sprintf("create the TrafficTarget in namespace %q, or drop destination.namespace", dst.namespace),
			"%q differs from the TrafficTarget's namespace %q; a TrafficTarget may only grant access to workloads in its own namespace", dst.namespace, meta.Namespace)
	}
	tt.Destination = Identity{Namespace: meta.Namespace, Name: dst.name}
	if dst.port != nil {
		if *dst.port < 1 || *dst.port > 65535 {
			if !bad {
				d.ps.errorf(prefix+"destination.port", "use a port between 1 and 65535, or omit it for all ports", "%d is out of range", *dst.port)
			}
		} else {
			tt.Port = int32(*dst.port)
		}
	}
	// Sources.
	if len(srcs) == 0 && !bad {
		d.ps.errorf(prefix+"sources", "list at least one source ServiceAccount", "is empty; a TrafficTarget without sources allows nothing")
	}
	seen := map[Identity]int{}
	for i, s := range srcs {
		path := fmt.Sprintf("%ssources[%d]", prefix, i)
		if !bad && s.kind != "ServiceAccount" {
			d.ps.errorf(path+".kind", "use kind: ServiceAccount", "%q is not supported; SMI access control identifies workloads by ServiceAccount", s.kind)
		}
		if !bad && s.namespace == "" {
			d.ps.errorf(path+".namespace", "add the source ServiceAccount's namespace", "is empty; a source must name its namespace")
		}
		id := Identity{Namespace: s.namespace, Name: s.name}
		if j, dup := seen[id]; dup {
			d.ps.warnf(path, "list each source once", "%s is also sources[%d]", id, j)
			continue
		}
		seen[id] = i
		tt.Sources = append(tt.Sources, id)
	}
	// Rules.
	if len(rules) == 0 && !bad {
		d.ps.errorf(prefix+strings.TrimPrefix(rulesField, "spec."), "list at least one rule (HTTPRouteGroup, TCPRoute or UDPRoute)", "is empty; a TrafficTarget without rules allows nothing")
	}
	for i, r := range rules {
		path := fmt.Sprintf("%s[%d]", rulesField, i)
		k := Kind(r.kind)
		if k != KindHTTPRouteGroup && k != KindTCPRoute && k != KindUDPRoute {
			if !bad {
				d.ps.errorf(path+".kind", "use HTTPRouteGroup, TCPRoute or UDPRoute", "%q is not a traffic spec kind Trellis knows; the whole TrafficTarget is disabled rather than half-applied", r.kind)
			}
			continue
		}
		if r.name == "" && !bad {
			d.ps.errorf(path+".name", "name the "+r.kind+" this rule uses", "is empty")
		}
		var ms []string
		if r.matches != nil {
			ms = append([]string{}, r.matches...)
		}
		tt.Rules = append(tt.Rules, Rule{Kind: k, Name: r.name, Matches: ms})
	}
	return tt
}

// renamed reports a field that a newer version renamed (v1alpha1 specs ->
// v1alpha2 rules).
func (d *decoder) renamed(old, now string) {
	spec, _ := d.raw["spec"].(map[string]any)
	if spec == nil {
		return
	}
	if _, ok := spec[old]; ok {
		d.explained["spec."+old] = true
		d.explained["required:spec."+now] = true
		d.ps.errorf("spec."+old, fmt.Sprintf("rename spec.%s to spec.%s", old, now), "is the v1alpha1 name; %s calls it %s", d.apiVersion(), now)
	}
}

// -------------------------------------------------------------- HTTPRouteGroup

func (d *decoder) httpRouteGroup(meta Meta) Object {
	g := &HTTPRouteGroup{Meta: meta}
	var matchesPath string
	var rawMatches []any
	if d.version == "v1alpha1" || d.version == "v1alpha2" {
		d.misplaced(d.version, []string{"matches"}, "")
		matchesPath = "matches"
		rawMatches, _ = d.raw["matches"].([]any)
	} else {
		d.misplaced(d.version, []string{"matches"}, "spec.")
		matchesPath = "spec.matches"
		if spec, ok := d.raw["spec"].(map[string]any); ok {
			rawMatches, _ = spec["matches"].([]any)
		}
	}
	// Headers: parse them here (the SDK's map loses duplicates and order)
	// and turn the map form the spec text shows into the list form.
	headers := make([][]match.Header, len(rawMatches))
	for i, rm := range rawMatches {
		m, ok := rm.(map[string]any)
		if !ok {
			continue
		}
		h, present := m["headers"]
		if !present {
			continue
		}
		path := fmt.Sprintf("%s[%d].headers", matchesPath, i)
		if d.version == "v1alpha1" {
			continue // reported as an unknown field by schema()
		}
		switch hv := h.(type) {
		case map[string]any:
			d.ps.warnf(path, "write headers as a list of single-entry maps: headers: [{user-agent: \".*Android.*\"}]", "is a map (the form the SMI spec text shows); Trellis read it as the list form the SMI schema and SDK use, which it will require in a future release")
			keys := make([]string, 0, len(hv))
			var list []any
			for k := range hv {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				list = append(list, map[string]any{k: hv[k]})
			}
			m["headers"] = list
			for _, k := range keys {
				if s, ok := hv[k].(string); ok {
					headers[i] = append(headers[i], match.Header{Name: k, Value: s})
				}
			}
		case []any:
			for _, item := range hv {
				im, ok := item.(map[string]any)
				if !ok || len(im) != 1 {
					continue // schema() reports it
				}
				for k, v := range im {
					if s, ok := v.(string); ok {
						headers[i] = append(headers[i], match.Header{Name: k, Value: s})
					}
				}
			}
		}
	}
	d.schema()
	type sdkMatch struct {
		name, pathRegex string
		methods         []string
	}
	var ms []sdkMatch
	// The SDK's header type fails on the map form and loses duplicates;
	// headers were parsed above, so convert without them.
	stripHeaders(rawMatches)
	switch d.version {
	case "v1alpha1":
		var o specsv1alpha1.HTTPRouteGroup
		if !d.convert(&o) {
			return g
		}
		for _, m := range o.Matches {
			ms = append(ms, sdkMatch{m.Name, m.PathRegex, m.Methods})
		}
	case "v1alpha2":
		var o specsv1alpha2.HTTPRouteGroup
		if !d.convert(&o) {
			return g
		}
		for _, m := range o.Matches {
			ms = append(ms, sdkMatch{m.Name, m.PathRegex, m.Methods})
		}
	case "v1alpha3":
		var o specsv1alpha3.HTTPRouteGroup
		if !d.convert(&o) {
			return g
		}
		for _, m := range o.Spec.Matches {
			ms = append(ms, sdkMatch{m.Name, m.PathRegex, m.Methods})
		}
	case "v1alpha4":
		var o specsv1alpha4.HTTPRouteGroup
		if !d.convert(&o) {
			return g
		}
		for _, m := range o.Spec.Matches {
			ms = append(ms, sdkMatch{m.Name, m.PathRegex, m.Methods})
		}
	}
	if len(ms) == 0 && !d.schemaBad {
		d.ps.warnf(matchesPath, "add at least one match", "is empty; the group matches no request")
	}
	names := map[string]int{}
	for i, m := range ms {
		path := fmt.Sprintf("%s[%d]", matchesPath, i)
		var hs []match.Header
		if i < len(headers) {
			hs = headers[i]
		}
		sort.SliceStable(hs, func(a, b int) bool { return strings.ToLower(hs[a].Name) < strings.ToLower(hs[b].Name) })
		spec := match.HTTPSpec{Name: m.name, PathRegex: m.pathRegex, Methods: m.methods, Headers: hs}
		if _, err := match.CompileHTTP(spec); err != nil {
			f, msg := splitFieldError(err.Error())
			if !d.reported(path + "." + f) {
				fix := ""
				if strings.HasPrefix(f, "pathRegex") || strings.HasSuffix(f, ".value") {
					fix = "write an RE2 expression (https://github.com/google/re2/wiki/Syntax); it is anchored at the start"
				}
				d.ps.errorf(path+"."+f, fix, "%s", msg)
			}
		}
		if m.name == "" && !d.schemaBad {
			d.ps.warnf(path+".name", "name the match so TrafficTargets can select it", "is empty; only rules without matches (all matches) can use it")
		}
		if j, dup := names[m.name]; dup && m.name != "" && !d.schemaBad {
			d.ps.errorf(path+".name", "give every match a unique name", "%q is also the name of %s[%d]", m.name, matchesPath, j)
		}
		names[m.name] = i
		g.Matches = append(g.Matches, spec)
	}
	return g
}

func stripHeaders(rawMatches []any) {
	for _, rm := range rawMatches {
		if m, ok := rm.(map[string]any); ok {
			delete(m, "headers")
		}
	}
}

// splitFieldError splits "pathRegex \"(\": not valid..." into the field
// path and the rest of the message.
func splitFieldError(s string) (string, string) {
	i := strings.IndexByte(s, ' ')
	if i < 0 {
		return "", s
	}
	return s[:i], s[i+1:]
}

// ------------------------------------------------------------ TCP/UDP routes

func (d *decoder) portRoute(meta Meta) PortMatch {
	var pm PortMatch
	if d.version != "v1alpha4" {
		d.schema() // no fields before v1alpha4: selects every port
		return pm
	}
	if spec, ok := d.raw["spec"].(map[string]any); ok {
		if _, list := spec["matches"].([]any); list {
			d.explained["spec.matches"] = true
			d.ps.errorf("spec.matches", "write matches as one object: matches: {name: ..., ports: [...]}", "is a list, but a %s has a single match object in %s", d.ki.Kind, d.apiVersion())
		}
	}
	if _, top := d.raw["matches"]; top {
		d.explained["matches"] = true
		d.ps.errorf("matches", "move matches under spec:", "is at the top level, but in %s it belongs under spec.matches", d.apiVersion())
	}
	d.schema()
	var name string
	var ports []int
	switch d.ki.Kind {
	case KindTCPRoute:
		var o specsv1alpha4.TCPRoute
		if !d.convert(&o) {
			return pm
		}
		name, ports = o.Spec.Matches.Name, o.Spec.Matches.Ports
	case KindUDPRoute:
		var o specsv1alpha4.UDPRoute
		if !d.convert(&o) {
			return pm
		}
		name, ports = o.Spec.Matches.Name, o.Spec.Matches.Ports
	}
	pm.Name = name
	seen := map[int]bool{}
	for i, p := range ports {
		if p < 1 || p > 65535 {
			if !d.schemaBad {
				d.ps.errorf(fmt.Sprintf("spec.matches.ports[%d]", i), "use ports between 1 and 65535", "%d is out of range", p)
			}
			continue
		}
		if seen[p] {
			d.ps.warnf(fmt.Sprintf("spec.matches.ports[%d]", i), "list each port once", "%d is listed twice", p)
			continue
		}
		seen[p] = true
		pm.Ports = append(pm.Ports, int32(p))
	}
	return pm
}

// ------------------------------------------------------------------ helpers

func nestedInt(m map[string]any, path ...string) (int64, bool) {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return 0, false
		}
		cur, ok = mm[p]
		if !ok {
			return 0, false
		}
	}
	switch v := cur.(type) {
	case int64:
		return v, true
	case float64:
		if v == math.Trunc(v) {
			return int64(v), true
		}
	}
	return 0, false
}

// normalizeJSON deep-copies JSON-like data, turning whole float64 numbers
// into int64 (as the apiserver's decoder does).
func normalizeJSON(v any) any { return schemacheck.Normalize(v) }
