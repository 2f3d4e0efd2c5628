package author

import (
	"context"
	"errors"
	"fmt"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/trellis-mesh/trellis/internal/cli/clienv"
)

// Actions, as printed (kubectl's words) and in -o json|yaml change records.
const (
	actCreate    = "created"
	actUpdate    = "configured"
	actUnchanged = "unchanged"
	actDelete    = "deleted"
)

// op is one write (or a no-op, kept so the output lists every object the
// command is about).
type op struct {
	action string
	kv     kindVersion
	// obj is the object to create or update (with the resourceVersion it
	// was read at), or the object to delete.
	obj *unstructured.Unstructured
	// why says which flag or step needs this write, for permission errors.
	why string
	// note is printed after the action ("source shop/a removed").
	note string
	// result is the object as the apiserver returned it (or obj when
	// unchanged or in a dry run).
	result *unstructured.Unstructured
}

func (o *op) verb() string {
	switch o.action {
	case actCreate:
		return "create"
	case actUpdate:
		return "update"
	case actDelete:
		return "delete"
	}
	return ""
}

// plan is an ordered list of writes applied all or nothing, as far as the
// apiserver lets a client: every write is authorized (SelfSubjectAccessReview)
// and tried (server-side dry run) before the first one is made.
type plan struct {
	s   *session
	ops []*op
}

func (p *plan) add(o *op) { p.ops = append(p.ops, o) }

// writes reports whether the plan changes anything.
func (p *plan) writes() bool {
	for _, o := range p.ops {
		if o.action != actUnchanged {
			return true
		}
	}
	return false
}

func (p *plan) resource(o *op) dynamic.ResourceInterface {
	return p.s.dyn.Resource(o.kv.gvr()).Namespace(o.obj.GetNamespace())
}

func (p *plan) describe(o *op) string {
	return fmt.Sprintf("%s %s %s/%s", o.verb(), o.kv.info.Kind, o.obj.GetNamespace(), o.obj.GetName())
}

// authorize asks the apiserver whether the user may make every write, and
// fails with one line listing all that are not allowed.
func (p *plan) authorize(ctx context.Context) error {
	var denied []string
	seen := map[string]bool{}
	for _, o := range p.ops {
		if o.action == actUnchanged {
			continue
		}
		attr := &authorizationv1.ResourceAttributes{
			Namespace: o.obj.GetNamespace(),
			Verb:      o.verb(),
			Group:     o.kv.info.Group,
			Resource:  o.kv.info.Resource,
		}
		if o.action != actCreate {
			attr.Name = o.obj.GetName()
		}
		key := fmt.Sprint(*attr)
		if seen[key] {
			continue
		}
		seen[key] = true
		r, err := p.s.kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: attr},
		}, metav1.CreateOptions{})
		if err != nil {
			return clienv.APIError("check permissions (SelfSubjectAccessReview)", err)
		}
		if !r.Status.Allowed {
			what := fmt.Sprintf("%s %s", attr.Verb, o.kv.resourceName())
			if attr.Name != "" {
				what += fmt.Sprintf(" %q", attr.Name)
			}
			what += " in namespace " + attr.Namespace
			if o.why != "" {
				what += " (" + o.why + ")"
			}
			denied = append(denied, what)
		}
	}
	if len(denied) > 0 {
		return clienv.Fail(clienv.ExitForbidden, fmt.Errorf("you are not allowed to %s; nothing was changed", strings.Join(denied, ", ")),
			"ask a cluster admin for these permissions, or use a context that has them (--context)")
	}
	return nil
}

// apply runs the plan. With dryRun it only reports; otherwise it
// authorizes every write, tries each one as a server-side dry run, and
// then makes them in order. If a write still fails (the cluster changed
// in between), objects this run created are deleted again and the error
// says what was applied.
func (p *plan) apply(ctx context.Context, dryRun bool) error {
	for _, o := range p.ops {
		o.result = o.obj
	}
	if dryRun || !p.writes() {
		return nil
	}
	if err := p.authorize(ctx); err != nil {
		return err
	}
	for _, o := range p.ops {
		if _, err := p.write(ctx, o, true); err != nil {
			return p.fail(o, err, true)
		}
	}
	var done []*op
	for _, o := range p.ops {
		res, err := p.write(ctx, o, false)
		if err != nil {
			return p.rollback(ctx, done, o, err)
		}
		if res != nil {
			o.result = res
		}
		done = append(done, o)
	}
	return nil
}

func (p *plan) write(ctx context.Context, o *op, dry bool) (*unstructured.Unstructured, error) {
	var dr []string
	if dry {
		dr = []string{metav1.DryRunAll}
	}
	ri := p.resource(o)
	switch o.action {
	case actCreate:
		return ri.Create(ctx, o.obj, metav1.CreateOptions{DryRun: dr, FieldManager: FieldManager, FieldValidation: "Strict"})
	case actUpdate:
		return ri.Update(ctx, o.obj, metav1.UpdateOptions{DryRun: dr, FieldManager: FieldManager, FieldValidation: "Strict"})
	case actDelete:
		uid, rv := o.obj.GetUID(), o.obj.GetResourceVersion()
		pre := &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}
		return nil, ri.Delete(ctx, o.obj.GetName(), metav1.DeleteOptions{DryRun: dr, Preconditions: pre})
	}
	return nil, nil
}

// fail classifies a failed write: a conflict means someone else changed
// the object since it was read; invalid means the cluster's schema or
// admission rejected it (a value no local check caught).
func (p *plan) fail(o *op, err error, dry bool) error {
	what := p.describe(o)
	nothing := ""
	if dry {
		nothing = "; nothing was changed"
	}
	switch {
	case apierrors.IsConflict(err) || (o.action == actDelete && apierrors.IsNotFound(err)):
		return clienv.Fail(clienv.ExitFailure, fmt.Errorf("%s: it changed while this command ran%s", what, nothing), "run the command again")
	case apierrors.IsAlreadyExists(err):
		return clienv.Fail(clienv.ExitFailure, fmt.Errorf("%s: it was created by someone else while this command ran%s", what, nothing), "run the command again")
	case apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		return clienv.Fail(clienv.ExitUsage, fmt.Errorf("%s: the cluster rejected it: %w%s", what, err, nothing), "")
	}
	e := clienv.APIError(what, err)
	var ce *clienv.Error
	if dry && errors.As(e, &ce) {
		return clienv.Fail(ce.Code, fmt.Errorf("%w%s", ce.Err, nothing), ce.Hint)
	}
	if dry {
		return fmt.Errorf("%w%s", e, nothing)
	}
	return e
}

func (p *plan) rollback(ctx context.Context, done []*op, failed *op, err error) error {
	var undone, kept []string
	for i := len(done) - 1; i >= 0; i-- {
		o := done[i]
		if o.action == actCreate {
			uid := o.result.GetUID()
			if derr := p.resource(o).Delete(ctx, o.obj.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); derr == nil {
				undone = append(undone, o.kv.ref(o.obj.GetName())+" (deleted again)")
				continue
			}
		}
		if o.action != actUnchanged {
			kept = append(kept, o.kv.ref(o.obj.GetName())+" "+o.action)
		}
	}
	e := p.fail(failed, err, false)
	var parts []string
	if len(undone) > 0 {
		parts = append(parts, "rolled back: "+strings.Join(undone, ", "))
	}
	if len(kept) > 0 {
		parts = append(parts, "already applied: "+strings.Join(kept, ", "))
	}
	if len(parts) == 0 {
		return e
	}
	return fmt.Errorf("%w (%s; run the command again to finish)", e, strings.Join(parts, "; "))
}
