package install

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// access is one permission the installer needs.
type access struct {
	Verb, Group, Resource, Subresource, Namespace, Name string
	// Path is a non-resource URL (RBAC rules granting it are checked when
	// a ClusterRole grants one).
	Path string
}

func (a access) String() string {
	if a.Path != "" {
		return a.Verb + " " + a.Path
	}
	r := a.Resource
	if a.Group != "" {
		r += "." + a.Group
	}
	if a.Subresource != "" {
		r += "/" + a.Subresource
	}
	s := a.Verb + " " + r
	if a.Name != "" {
		s += fmt.Sprintf(" %q", a.Name)
	}
	if a.Namespace != "" {
		return s + " in namespace " + a.Namespace
	}
	return s + " (cluster-wide)"
}

func (a access) review() *authorizationv1.SelfSubjectAccessReview {
	r := &authorizationv1.SelfSubjectAccessReview{}
	if a.Path != "" {
		r.Spec.NonResourceAttributes = &authorizationv1.NonResourceAttributes{Path: a.Path, Verb: a.Verb}
		return r
	}
	r.Spec.ResourceAttributes = &authorizationv1.ResourceAttributes{Verb: a.Verb, Group: a.Group, Resource: a.Resource,
		Subresource: a.Subresource, Namespace: a.Namespace, Name: a.Name}
	return r
}

// checker asks the apiserver, with SelfSubjectAccessReviews, whether the
// user may do what the installer is about to do, before it does any of it.
type checker struct {
	kube kubernetes.Interface
	mu   sync.Mutex
	seen map[access]bool
	user string
}

func newChecker(kube kubernetes.Interface) *checker {
	return &checker{kube: kube, seen: map[access]bool{}}
}

// whoami names the user for messages ("you" when the apiserver does not
// say).
func (c *checker) whoami(ctx context.Context) string {
	if c.user != "" {
		return c.user
	}
	c.user = "you"
	if r, err := c.kube.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{}); err == nil && r.Status.UserInfo.Username != "" {
		c.user = r.Status.UserInfo.Username
	}
	return c.user
}

// allowed reports, in the order given, whether each permission is granted
// (duplicates are asked once; up to 8 reviews run at a time).
func (c *checker) allowed(ctx context.Context, as []access) ([]bool, error) {
	out := make([]bool, len(as))
	errs := make([]error, len(as))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, a := range as {
		c.mu.Lock()
		v, ok := c.seen[a]
		c.mu.Unlock()
		if ok {
			out[i] = v
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			var r *authorizationv1.SelfSubjectAccessReview
			// A review changes nothing, so a dropped connection is retried
			// (client-go retries only GETs by itself).
			err := retry.OnError(retry.DefaultBackoff, transient, func() error {
				var err error
				r, err = c.kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, a.review(), metav1.CreateOptions{})
				return err
			})
			if err != nil {
				errs[i] = fmt.Errorf("checking whether you may %s: %w", a, err)
				return
			}
			out[i] = r.Status.Allowed
			c.mu.Lock()
			c.seen[a] = r.Status.Allowed
			c.mu.Unlock()
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// transient is a dropped connection or an overloaded apiserver.
func transient(err error) bool {
	return utilnet.IsConnectionReset(err) || utilnet.IsProbableEOF(err) || apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err)
}

// require fails with a Forbidden error naming the first permission (in the
// order given) the user lacks.
func (c *checker) require(ctx context.Context, as []access) error {
	ok, err := c.allowed(ctx, as)
	if err != nil {
		return err
	}
	for i, a := range as {
		if !ok[i] {
			return c.forbidden(ctx, a.String())
		}
	}
	return nil
}

// forbidden is the error for a missing permission; clienv.APIError turns
// it into exit code 5 with a hint.
func (c *checker) forbidden(ctx context.Context, what string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusForbidden, Reason: metav1.StatusReasonForbidden,
		Message: fmt.Sprintf("%s may not %s; nothing was changed", c.whoami(ctx), what),
	}}
}
