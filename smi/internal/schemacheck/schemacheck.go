package schemacheck

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"

	"github.com/trellis-mesh/trellis/manifests/crds"
	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apiservervalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"math"
)

type checker struct {
	structural *structuralschema.Structural
	validator  apiservervalidation.SchemaValidator
	cel        *cel.Validator
}

var (
	once     sync.Once
	checkers map[schema.GroupVersionKind]*checker
	loadErr  error
)

func load() {
	checkers = map[schema.GroupVersionKind]*checker{}
	list, err := crds.Load()
	if err != nil {
		loadErr = err
		return
	}
	for _, c := range list {
		for _, v := range c.Spec.Versions {
			gvk := schema.GroupVersionKind{Group: c.Spec.Group, Version: v.Name, Kind: c.Spec.Names.Kind}
			internal := &apiextensions.JSONSchemaProps{}
			if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(v.Schema.OpenAPIV3Schema, internal, nil); err != nil {
				loadErr = fmt.Errorf("%s %s: %w", c.Name, v.Name, err)
				return
			}
			st, err := structuralschema.NewStructural(internal)
			if err != nil {
				loadErr = fmt.Errorf("%s %s: %w", c.Name, v.Name, err)
				return
			}
			val, _, err := apiservervalidation.NewSchemaValidator(internal)
			if err != nil {
				loadErr = fmt.Errorf("%s %s: %w", c.Name, v.Name, err)
				return
			}
			checkers[gvk] = &checker{structural: st, validator: val, cel: cel.NewValidator(st, true, celconfig.PerCallLimit)}
		}
	}
}

// Result of checking one object.
type Result struct {
	// Unknown lists fields the schema does not declare (the apiserver would
	// prune them), as dotted paths.
	Unknown []string
	// Errors are schema and CEL violations, as the apiserver reports them.
	Errors field.ErrorList
}

// Check validates obj (an unstructured object's content, not modified) as
// the given group/version/kind. ok is false when Trellis ships no schema for it.
func Check(gvk schema.GroupVersionKind, obj map[string]any) (res Result, ok bool, err error) {
	once.Do(load)
	if loadErr != nil {
		return res, false, loadErr
	}
	c := checkers[gvk]
	if c == nil {
		return res, false, nil
	}
	defer func() {
		// The validators are the apiserver's; never let a surprise in them
		// take the controller down.
		if r := recover(); r != nil {
			err = fmt.Errorf("schema check panicked: %v\n%s", r, debug.Stack())
		}
	}()
	cp, _ := Normalize(obj).(map[string]any)
	opts := structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true}
	res.Unknown = pruning.PruneWithOptions(cp, c.structural, true, opts)
	res.Errors = apiservervalidation.ValidateCustomResource(nil, cp, c.validator)
	if c.cel != nil {
		errs, _ := c.cel.Validate(context.Background(), nil, c.structural, cp, nil, celconfig.RuntimeCELCostBudget)
		res.Errors = append(res.Errors, errs...)
	}
	return res, true, nil
}

// Normalize deep-copies a JSON-like value, turning whole float64 numbers
// into int64 as the apiserver's JSON decoder does (YAML and encoding/json
// produce float64 for every number).
func Normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = Normalize(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = Normalize(e)
		}
		return out
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x)
		}
		return x
	case int:
		return int64(x)
	case int32:
		return int64(x)
	default:
		return v
	}
}
