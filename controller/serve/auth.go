package serve

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
)

// Extra keys the apiserver sets on pod-bound ServiceAccount tokens.
const (
	ExtraPodName  = "authentication.kubernetes.io/pod-name"
	ExtraPodUID   = "authentication.kubernetes.io/pod-uid"
	ExtraNodeName = "authentication.kubernetes.io/node-name"
)

// Caller is an authenticated client.
type Caller struct {
	User   string
	UID    string
	Groups []string
	Extra  map[string][]string
}

func (c *Caller) extra(k string) string {
	if v := c.Extra[k]; len(v) == 1 {
		return v[0]
	}
	return ""
}

// Authenticator checks bearer tokens.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (*Caller, error)
}

// Authorizer decides whether a caller may read the debug API.
type Authorizer interface {
	AllowedDebug(ctx context.Context, c *Caller) (bool, string, error)
}

// PodGetter finds the pod a token is bound to.
type PodGetter interface {
	GetPod(ctx context.Context, namespace, name string) (*corev1.Pod, error)
}

// ErrUnauthenticated means the token was not accepted.
var ErrUnauthenticated = errors.New("token not accepted")

// TokenReviewer authenticates with the TokenReview API and caches results
// for TTL (keyed by a hash of the token; failures are not cached).
type TokenReviewer struct {
	Client    kubernetes.Interface
	Audiences []string
	TTL       time.Duration

	mu    sync.Mutex
	cache map[[32]byte]cached
}

type cached struct {
	c   *Caller
	exp time.Time
}

var _ Authenticator = (*TokenReviewer)(nil)

// Authenticate implements Authenticator.
func (t *TokenReviewer) Authenticate(ctx context.Context, token string) (*Caller, error) {
	key := sha256.Sum256([]byte(token))
	now := time.Now()
	t.mu.Lock()
	if e, ok := t.cache[key]; ok && now.Before(e.exp) {
		t.mu.Unlock()
		return e.c, nil
	}
	t.mu.Unlock()
	tr, err := t.Client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: t.Audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("TokenReview: %w", err)
	}
	if !tr.Status.Authenticated {
		msg := tr.Status.Error
		if msg == "" {
			msg = "not authenticated"
		}
		return nil, fmt.Errorf("%w: %s", ErrUnauthenticated, msg)
	}
	c := &Caller{User: tr.Status.User.Username, UID: tr.Status.User.UID, Groups: tr.Status.User.Groups, Extra: map[string][]string{}}
	for k, v := range tr.Status.User.Extra {
		c.Extra[k] = append([]string(nil), v...)
	}
	ttl := t.TTL
	if ttl == 0 {
		ttl = time.Minute
	}
	t.mu.Lock()
	if t.cache == nil || len(t.cache) > 10000 {
		t.cache = map[[32]byte]cached{}
	}
	t.cache[key] = cached{c, now.Add(ttl)}
	t.mu.Unlock()
	return c, nil
}

// SARAuthorizer allows the debug API to callers that may `get` the
// non-resource URL Path (default /trellis/debug) according to RBAC.
type SARAuthorizer struct {
	Client kubernetes.Interface
	Path   string
}

var _ Authorizer = (*SARAuthorizer)(nil)

// DebugPath is the non-resource URL RBAC grants for the debug API.
const DebugPath = "/trellis/debug"

// AllowedDebug implements Authorizer.
func (a *SARAuthorizer) AllowedDebug(ctx context.Context, c *Caller) (bool, string, error) {
	path := a.Path
	if path == "" {
		path = DebugPath
	}
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range c.Extra {
		extra[k] = v
	}
	sar, err := a.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{
		Spec: authzv1.SubjectAccessReviewSpec{
			User: c.User, UID: c.UID, Groups: c.Groups, Extra: extra,
			NonResourceAttributes: &authzv1.NonResourceAttributes{Path: path, Verb: "get"},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, "", fmt.Errorf("SubjectAccessReview: %w", err)
	}
	return sar.Status.Allowed, sar.Status.Reason, nil
}

// ListerPods finds pods in the informer cache, then asks the apiserver
// (a proxy pod may connect before the cache has seen it).
type ListerPods struct {
	Lister corelisters.PodLister
	Client kubernetes.Interface
}

var _ PodGetter = (*ListerPods)(nil)

// GetPod implements PodGetter.
func (l *ListerPods) GetPod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	if l.Lister != nil {
		if p, err := l.Lister.Pods(ns).Get(name); err == nil {
			return p, nil
		}
	}
	if l.Client == nil {
		return nil, apierrors.NewNotFound(corev1.Resource("pods"), name)
	}
	return l.Client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
}
