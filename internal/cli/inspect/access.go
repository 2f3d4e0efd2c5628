package inspect

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/trellis-mesh/trellis/controller/serve"
	"github.com/trellis-mesh/trellis/internal/cli/clienv"
	"github.com/trellis-mesh/trellis/node-proxy/admin"
	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/smi"
)

// podGetter reads an HTTP path from a pod's port. Production goes through
// the apiserver's pods/proxy subresource; tests serve the real handlers on
// loopback sockets. An error status answered by the pod itself is a
// *podError; anything else (RBAC, pod gone, port closed) is the
// apiserver's.
type podGetter interface {
	PodGet(ctx context.Context, ns, pod string, port int, path string, header http.Header) ([]byte, error)
}

// podError is an error status the pod answered with.
type podError struct {
	Code int
	Msg  string
}

func (e *podError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Code, http.StatusText(e.Code), e.Msg)
}

// apiserverProxy is the production podGetter: clienv.Env.PodGet, with the
// pod's own error answers told apart from the apiserver's.
type apiserverProxy struct{ env *clienv.Env }

var _ podGetter = apiserverProxy{}

// PodGet implements podGetter.
func (p apiserverProxy) PodGet(ctx context.Context, ns, pod string, port int, path string, header http.Header) ([]byte, error) {
	b, err := p.env.PodGet(ctx, ns, pod, port, path, header)
	if err != nil {
		return nil, fromPod(fmt.Sprintf("GET %s from pod %s/%s port %d", path, ns, pod, port), b, err)
	}
	return b, nil
}

// fromPod classifies a failed pods/proxy GET (what names it): the
// apiserver answers its own refusals (RBAC, no such pod, connection
// refused) with a Status object; anything else in the body is what the pod
// said.
func fromPod(what string, body []byte, err error) error {
	var st apierrors.APIStatus
	if !errors.As(err, &st) || len(bytes.TrimSpace(body)) == 0 {
		return err
	}
	var status metav1.Status
	if json.Unmarshal(body, &status) == nil && status.Kind == "Status" {
		if status.Message == "" {
			return err
		}
		// Keep the classification, say what the apiserver said.
		said := fmt.Errorf("%s: %w", what, &apierrors.StatusError{ErrStatus: status})
		var ce *clienv.Error
		if errors.As(err, &ce) {
			return clienv.Fail(ce.Code, said, ce.Hint)
		}
		return said
	}
	return &podError{Code: int(st.Status().Code), Msg: podMessage(body)}
}

// podMessage is the message of a pod's error body: the controller's
// {"error": ...} or plain text.
func podMessage(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	return strings.TrimSpace(string(body))
}

type deps struct {
	pods podGetter
	now  func() time.Time
}

// session is one command's view of the cluster.
type session struct {
	env  *clienv.Env
	d    deps
	kube kubernetes.Interface
	ns   string

	auth    http.Header // debug API credentials, once obtained
	authHow string      // how they were obtained, for messages
	ownTok  string      // the kubeconfig's bearer token, if any
	usedOwn bool        // auth holds ownTok
	noOwn   bool        // the controller refused the kubeconfig token
}

func newSession(env *clienv.Env, d deps) (*session, error) {
	cfg, err := env.RESTConfig()
	if err != nil {
		return nil, err
	}
	// check --pre asks the apiserver about a few dozen permissions; the
	// client-go default of 5 requests a second would make that take
	// seconds (kubectl itself allows 50).
	fast := rest.CopyConfig(cfg)
	fast.QPS, fast.Burst = 50, 100
	kube, err := kubernetes.NewForConfig(fast)
	if err != nil {
		return nil, err
	}
	s := &session{env: env, d: d, kube: kube, ns: env.MeshNamespace, ownTok: cfg.BearerToken}
	if s.ownTok == "" && cfg.BearerTokenFile != "" {
		if b, err := os.ReadFile(cfg.BearerTokenFile); err == nil {
			s.ownTok = strings.TrimSpace(string(b))
		}
	}
	if cfg.Impersonate.UserName != "" {
		// RBAC answers for the impersonated user, but the token would
		// authenticate the real one to the controller.
		s.ownTok = ""
	}
	return s, nil
}

// may asks the apiserver whether the user may do something
// (SelfSubjectAccessReview).
func (s *session) may(ctx context.Context, ra *authzv1.ResourceAttributes, nra *authzv1.NonResourceAttributes) (bool, error) {
	r, err := s.kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authzv1.SelfSubjectAccessReview{
		Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: ra, NonResourceAttributes: nra},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, clienv.APIError("SelfSubjectAccessReview", err)
	}
	return r.Status.Allowed, nil
}

func rbacHint(ns string) string {
	return fmt.Sprintf("ask a cluster admin to bind ClusterRole trellis-cli-user and Role %s/trellis-cli-user to you (manifests/base/cli-rbac.yaml)", ns)
}

// podsProxyAttrs: what reading the controller and proxies needs.
func podsProxyAttrs(ns string) *authzv1.ResourceAttributes {
	return &authzv1.ResourceAttributes{Namespace: ns, Verb: "get", Resource: "pods", Subresource: "proxy"}
}

func tokenAttrs(ns string) *authzv1.ResourceAttributes {
	return &authzv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "serviceaccounts", Subresource: "token", Name: cliServiceAccount}
}

// needPodsProxy fails with exit 5 unless the user may get pods/proxy in the
// mesh namespace.
func (s *session) needPodsProxy(ctx context.Context) error {
	ok, err := s.may(ctx, podsProxyAttrs(s.ns), nil)
	if err != nil {
		return err
	}
	if !ok {
		return clienv.Fail(clienv.ExitForbidden,
			fmt.Errorf("you may not get pods/proxy in namespace %s, which reading the controller and the proxies goes through", s.ns), rbacHint(s.ns))
	}
	return nil
}

// debugAuth returns the header that authenticates to the controller's
// debug API: the kubeconfig's own bearer token when RBAC lets it get the
// debug URL, else a short-lived token for the trellis-cli ServiceAccount.
func (s *session) debugAuth(ctx context.Context, in *install) (http.Header, error) {
	if s.auth != nil {
		return s.auth, nil
	}
	if s.ownTok != "" && !s.noOwn {
		ok, err := s.may(ctx, nil, &authzv1.NonResourceAttributes{Path: serve.DebugPath, Verb: "get"})
		if err != nil {
			return nil, err
		}
		if ok {
			s.auth, s.authHow, s.usedOwn = bearerHeader(s.ownTok), "your own token", true
			return s.auth, nil
		}
	}
	ok, err := s.may(ctx, tokenAttrs(s.ns), nil)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, clienv.Fail(clienv.ExitForbidden,
			fmt.Errorf("you may not create serviceaccounts/token for %s/%s, which reading the controller's debug API needs (or a kubeconfig token that may get %s)", s.ns, cliServiceAccount, serve.DebugPath),
			rbacHint(s.ns))
	}
	exp := int64(600) // the shortest the apiserver issues
	tr, err := s.kube.CoreV1().ServiceAccounts(s.ns).CreateToken(ctx, cliServiceAccount, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &exp, Audiences: tokenAudiences(in.deploy)},
	}, metav1.CreateOptions{})
	if apierrors.IsNotFound(err) {
		return nil, clienv.Fail(clienv.ExitNotFound, fmt.Errorf("ServiceAccount %s/%s not found", s.ns, cliServiceAccount),
			"re-run kubectl trellis install, which creates it")
	}
	if err != nil {
		return nil, clienv.APIError(fmt.Sprintf("request a token for ServiceAccount %s/%s", s.ns, cliServiceAccount), err)
	}
	s.auth, s.authHow, s.usedOwn = bearerHeader(tr.Status.Token), fmt.Sprintf("a token for ServiceAccount %s/%s", s.ns, cliServiceAccount), false
	return s.auth, nil
}

func bearerHeader(tok string) http.Header {
	h := http.Header{}
	h.Set(serve.DebugAuthHeader, "Bearer "+tok)
	return h
}

// podTimeout bounds one read from a pod: a hung controller or proxy must
// not hang check (the apiserver's proxy waits much longer).
const podTimeout = 15 * time.Second

func (s *session) podGet(ctx context.Context, pod string, port int, path string, h http.Header) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, podTimeout)
	defer cancel()
	return s.d.pods.PodGet(ctx, s.ns, pod, port, path, h)
}

// controllerGet reads one debug view from a controller pod into v.
func (s *session) controllerGet(ctx context.Context, in *install, pod *corev1.Pod, view string, v any) error {
	port := containerPort(&pod.Spec, streamPortName, defaultStreamPort)
	path := "/debug/" + view
	for attempt := 0; ; attempt++ {
		h, err := s.debugAuth(ctx, in)
		if err != nil {
			return err
		}
		b, err := s.podGet(ctx, controllerScheme(in.deploy)+pod.Name, port, path, h)
		var pe *podError
		if errors.As(err, &pe) && pe.Code == http.StatusUnauthorized && s.usedOwn && attempt == 0 {
			// The controller may check another audience than the
			// kubeconfig token has: fall back to the trellis-cli token.
			s.auth, s.noOwn = nil, true
			continue
		}
		if errors.As(err, &pe) && (pe.Code == http.StatusUnauthorized || pe.Code == http.StatusForbidden) {
			return clienv.Fail(clienv.ExitForbidden, fmt.Errorf("controller %s/%s refused GET %s (with %s): %s", s.ns, pod.Name, path, s.authHow, pe.Msg),
				fmt.Sprintf("bind ClusterRole trellis-cli to whoever the token belongs to, or re-run kubectl trellis install to restore %s", "manifests/base/cli-rbac.yaml"))
		}
		if errors.As(err, &pe) {
			return fmt.Errorf("controller %s/%s answered GET %s with %w", s.ns, pod.Name, path, err)
		}
		if err != nil {
			return err // names the pod and path
		}
		if err := json.Unmarshal(b, v); err != nil {
			return fmt.Errorf("controller %s/%s: GET %s: not the expected JSON: %w", s.ns, pod.Name, path, err)
		}
		return nil
	}
}

// proxyDebug reads a proxy's /debug/config.
func (s *session) proxyDebug(ctx context.Context, pod *corev1.Pod) (*admin.Debug, error) {
	port := containerPort(&pod.Spec, adminPortName, defaultAdminPort)
	b, err := s.podGet(ctx, pod.Name, port, "/debug/config", nil)
	var pe *podError
	if errors.As(err, &pe) {
		return nil, fmt.Errorf("proxy %s/%s answered GET /debug/config with %w", s.ns, pod.Name, err)
	}
	if err != nil {
		return nil, err // names the pod and path
	}
	var d admin.Debug
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("proxy %s/%s: GET /debug/config: not the expected JSON: %w", s.ns, pod.Name, err)
	}
	return &d, nil
}

// proxyResult is one proxy's /debug/config, or why it could not be read.
type proxyResult struct {
	pod   *corev1.Pod
	debug *admin.Debug
	err   error
}

// proxyDebugs reads every running proxy, a few at a time.
func (s *session) proxyDebugs(ctx context.Context, pods []corev1.Pod) []proxyResult {
	out := make([]proxyResult, len(pods))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range pods {
		out[i].pod = &pods[i]
		if !podRunning(&pods[i]) {
			out[i].err = fmt.Errorf("pod %s/%s is %s", s.ns, pods[i].Name, podPhase(&pods[i]))
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			out[i].debug, out[i].err = s.proxyDebug(ctx, &pods[i])
		}()
	}
	wg.Wait()
	return out
}

func podPhase(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "terminating"
	}
	if p.Status.Phase == "" {
		return "pending"
	}
	return strings.ToLower(string(p.Status.Phase))
}

// controllerState is the controller's /debug/state.
type controllerState struct {
	Replica        string            `json:"replica"`
	Version        string            `json:"version"`
	Leading        bool              `json:"leading"`
	SMI            string            `json:"smi"`
	DNS            string            `json:"dns"`
	DNSSynced      bool              `json:"dnsSynced"`
	CoreDNSEnabled *bool             `json:"coreDNSEnabled"`
	ShadowErrors   string            `json:"shadowErrors"`
	WebhookError   string            `json:"webhookError"`
	Problems       map[string]int    `json:"problems"`
	Versions       map[string]string `json:"versions"`
	PendingPorts   int               `json:"pendingPorts"`
	Services       int               `json:"services"`
}

// serviceView is one entry of the controller's /debug/services.
type serviceView struct {
	Service  string               `json:"service"`
	MeshedBy string               `json:"meshedBy"`
	Shadow   string               `json:"shadow"`
	Ports    []config.ServicePort `json:"ports"`
	Split    *config.Split        `json:"split,omitempty"`
	Rules    int                  `json:"rules"`
}

func (s *session) state(ctx context.Context, in *install, pod *corev1.Pod) (*controllerState, error) {
	var st controllerState
	return &st, s.controllerGet(ctx, in, pod, "state", &st)
}

func (s *session) services(ctx context.Context, in *install, pod *corev1.Pod) ([]serviceView, error) {
	var v []serviceView
	return v, s.controllerGet(ctx, in, pod, "services", &v)
}

func (s *session) problems(ctx context.Context, in *install, pod *corev1.Pod) ([]smi.Problem, error) {
	var v []smi.Problem
	return v, s.controllerGet(ctx, in, pod, "problems", &v)
}
