package smi

import (
	"encoding/json"
	"fmt"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// ConversionAnnotation holds, as JSON, fields that the version an object was
// converted to cannot express (for example TrafficSplit matches read through
// v1alpha2), so that converting back restores them. The CRD conversion
// webhook adds and removes it; users should not edit it.
const ConversionAnnotation = "conversion.trellis.io/smi-fields"

// Convert returns obj converted to apiVersion (same group and kind), for the
// CRD conversion webhook. Every version pair converts both ways; fields the
// target cannot express are kept in ConversionAnnotation and restored when
// converting back. obj is not modified.
func Convert(obj *unstructured.Unstructured, apiVersion string) (*unstructured.Unstructured, error) {
	ki, from, err := LookupGVK(obj.GetAPIVersion(), obj.GetKind())
	if err != nil {
		return nil, fmt.Errorf("%s %s/%s: %w", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err)
	}
	_, to, err := LookupGVK(apiVersion, obj.GetKind())
	if err != nil {
		return nil, fmt.Errorf("%s %s/%s: converting to %w", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err)
	}
	out := obj.DeepCopy()
	out.Object = normalizeJSON(out.Object).(map[string]any)
	if from == to {
		return out, nil
	}
	c := &converter{u: out, stash: map[string]any{}}
	if err := c.loadStash(); err != nil {
		return nil, fmt.Errorf("%s %s/%s: %w", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err)
	}
	switch ki.Kind {
	case KindTrafficSplit:
		err = c.trafficSplit(from, to)
	case KindTrafficTarget:
		c.trafficTarget(from, to)
	case KindHTTPRouteGroup:
		c.httpRouteGroup(from, to)
	case KindTCPRoute:
		c.tcpRoute(from, to)
	case KindUDPRoute: // one version only
	}
	if err != nil {
		return nil, fmt.Errorf("%s %s/%s: converting %s to %s: %w", obj.GetKind(), obj.GetNamespace(), obj.GetName(), from, to, err)
	}
	out.SetAPIVersion(ki.Group + "/" + to)
	if err := c.saveStash(); err != nil {
		return nil, err
	}
	return out, nil
}

type converter struct {
	u     *unstructured.Unstructured
	stash map[string]any
}

func (c *converter) loadStash() error {
	v, ok := c.u.GetAnnotations()[ConversionAnnotation]
	if !ok {
		return nil
	}
	if err := json.Unmarshal([]byte(v), &c.stash); err != nil {
		return fmt.Errorf("annotation %s is not valid JSON: %w", ConversionAnnotation, err)
	}
	c.stash = normalizeJSON(c.stash).(map[string]any)
	return nil
}

func (c *converter) saveStash() error {
	ann := c.u.GetAnnotations()
	if len(c.stash) == 0 {
		if _, ok := ann[ConversionAnnotation]; ok {
			delete(ann, ConversionAnnotation)
			if len(ann) == 0 {
				ann = nil
			}
			c.u.SetAnnotations(ann)
		}
		return nil
	}
	b, err := json.Marshal(c.stash)
	if err != nil {
		return err
	}
	if ann == nil {
		ann = map[string]string{}
	}
	ann[ConversionAnnotation] = string(b)
	c.u.SetAnnotations(ann)
	return nil
}

func (c *converter) spec() map[string]any {
	s, ok := c.u.Object["spec"].(map[string]any)
	if !ok {
		s = map[string]any{}
		c.u.Object["spec"] = s
	}
	return s
}

// move moves top-level field from into spec.to (up) or back (down).
func (c *converter) toSpec(from, to string) {
	if v, ok := c.u.Object[from]; ok {
		c.spec()[to] = v
		delete(c.u.Object, from)
	}
}

func (c *converter) fromSpec(from, to string) {
	s, ok := c.u.Object["spec"].(map[string]any)
	if !ok {
		return
	}
	if v, ok := s[from]; ok {
		c.u.Object[to] = v
		delete(s, from)
	}
	if len(s) == 0 {
		delete(c.u.Object, "spec")
	}
}

func vnum(v string) int { return int(v[len(v)-1] - '0') } // v1alphaN

// ---------------------------------------------------------------- TrafficSplit

func (c *converter) trafficSplit(from, to string) error {
	spec := c.spec()
	backends, _ := spec["backends"].([]any)
	// Weights: v1alpha1 quantities <-> v1alpha2+ integers.
	if from == "v1alpha1" && to != "v1alpha1" {
		var qs []resource.Quantity
		milli := false
		for i, b := range backends {
			bm, _ := b.(map[string]any)
			q, err := toQuantity(bm["weight"])
			if err != nil {
				return fmt.Errorf("spec.backends[%d].weight: %w", i, err)
			}
			if _, ok := q.AsInt64(); !ok {
				milli = true
			}
			qs = append(qs, q)
		}
		orig := make([]any, len(backends))
		for i, b := range backends {
			bm, _ := b.(map[string]any)
			orig[i] = bm["weight"]
			if milli {
				bm["weight"] = qs[i].MilliValue()
			} else {
				n, _ := qs[i].AsInt64()
				bm["weight"] = n
			}
		}
		if milli {
			c.stash["v1alpha1.weights"] = orig
		}
	}
	if to == "v1alpha1" && from != "v1alpha1" {
		orig, _ := c.stash["v1alpha1.weights"].([]any)
		restore := len(orig) == len(backends)
		if restore { // only if the integer weights still match the stashed quantities
			for i, b := range backends {
				bm, _ := b.(map[string]any)
				q, err := toQuantity(orig[i])
				w, ok := bm["weight"].(int64)
				if err != nil || !ok || q.MilliValue() != w {
					restore = false
					break
				}
			}
		}
		for i, b := range backends {
			bm, _ := b.(map[string]any)
			if restore {
				bm["weight"] = orig[i]
			} else if w, ok := bm["weight"].(int64); ok {
				bm["weight"] = w // an integer is a valid quantity
			}
		}
		delete(c.stash, "v1alpha1.weights")
	}
	// Matches exist from v1alpha3 on.
	if vnum(to) < 3 {
		if m, ok := spec["matches"]; ok {
			c.stash["spec.matches"] = m
			delete(spec, "matches")
		}
	} else if m, ok := c.stash["spec.matches"]; ok {
		if _, has := spec["matches"]; !has {
			spec["matches"] = m
		}
		delete(c.stash, "spec.matches")
	}
	return nil
}

func toQuantity(v any) (resource.Quantity, error) {
	switch x := v.(type) {
	case int64:
		return *resource.NewQuantity(x, resource.DecimalSI), nil
	case float64:
		return resource.ParseQuantity(fmt.Sprint(x))
	case string:
		return resource.ParseQuantity(x)
	case nil:
		return resource.Quantity{}, nil
	}
	return resource.Quantity{}, fmt.Errorf("%v is not a quantity", v)
}

// --------------------------------------------------------------- TrafficTarget

func (c *converter) trafficTarget(from, to string) {
	// Shape: v1alpha1 top-level destination/sources/specs; v1alpha2 and
	// v1alpha3 spec.destination/sources/rules (Trellis keeps
	// destination.port in v1alpha3, so no field is lost).
	if from == "v1alpha1" {
		c.toSpec("destination", "destination")
		c.toSpec("sources", "sources")
		c.toSpec("specs", "rules")
	}
	if to == "v1alpha1" {
		c.fromSpec("destination", "destination")
		c.fromSpec("sources", "sources")
		c.fromSpec("rules", "specs")
	}
}

// -------------------------------------------------------------- HTTPRouteGroup

func (c *converter) httpRouteGroup(from, to string) {
	fromSpec, toSpec := vnum(from) >= 3, vnum(to) >= 3
	if !fromSpec && toSpec {
		c.toSpec("matches", "matches")
	}
	if fromSpec && !toSpec {
		c.fromSpec("matches", "matches")
	}
	var matches []any
	if toSpec {
		matches, _ = c.spec()["matches"].([]any)
	} else {
		matches, _ = c.u.Object["matches"].([]any)
	}
	// Headers exist from v1alpha2 on: keep them by match name.
	if to == "v1alpha1" {
		kept := map[string]any{}
		for i, m := range matches {
			mm, _ := m.(map[string]any)
			if h, ok := mm["headers"]; ok {
				name, _ := mm["name"].(string)
				if name == "" {
					name = fmt.Sprintf("#%d", i)
				}
				kept[name] = h
				delete(mm, "headers")
			}
		}
		if len(kept) > 0 {
			c.stash["headers"] = kept
		}
	} else if kept, ok := c.stash["headers"].(map[string]any); ok {
		for i, m := range matches {
			mm, _ := m.(map[string]any)
			name, _ := mm["name"].(string)
			if name == "" {
				name = fmt.Sprintf("#%d", i)
			}
			if h, ok := kept[name]; ok {
				if _, has := mm["headers"]; !has {
					mm["headers"] = h
				}
			}
		}
		delete(c.stash, "headers")
	}
}

// -------------------------------------------------------------------- TCPRoute

func (c *converter) tcpRoute(from, to string) {
	// v1alpha1/2: no spec; v1alpha3: empty spec; v1alpha4: spec.matches.
	if to != "v1alpha4" {
		if s, ok := c.u.Object["spec"].(map[string]any); ok {
			if m, ok := s["matches"]; ok {
				c.stash["spec.matches"] = m
			}
		}
		_, hadSpec := c.u.Object["spec"]
		delete(c.u.Object, "spec")
		if to == "v1alpha3" && hadSpec {
			c.u.Object["spec"] = map[string]any{}
		}
		return
	}
	if m, ok := c.stash["spec.matches"]; ok {
		s := c.spec()
		if _, has := s["matches"]; !has {
			s["matches"] = m
		}
		delete(c.stash, "spec.matches")
	}
}
