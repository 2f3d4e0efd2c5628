package config

import (
	"encoding/json"

	"github.com/trellis-mesh/trellis/smi/match"
)

// Config is everything one node proxy needs. It is produced whole by the
// controller for one node and replaces the previous Config whole: there are
// no partial updates.
type Config struct {
	// Version identifies the content. The controller sets it to Hash() of the
	// config; Decode fills it with Hash() when it is empty. Two configs with
	// the same Version are treated as identical: applying one is a no-op.
	Version string `json:"version,omitempty"`

	// Node is the Kubernetes node this config was compiled for. The proxy
	// refuses a config for another node when it knows its own node name.
	Node string `json:"node"`

	// Zone is the topology zone of Node ("" when unknown). Services with
	// Resilience.SameZone prefer endpoints whose Zone equals it.
	Zone string `json:"zone,omitempty"`

	// MeshDomain is the DNS suffix of mesh names: HTTP requests are routed by
	// Host/:authority `<service>.<namespace>.<meshDomain>[:port]`.
	// Default when empty: "mesh".
	MeshDomain string `json:"meshDomain,omitempty"`

	// Listeners are the node-wide listening ports. TCP and UDP service ports
	// carry their own ListenPort instead.
	Listeners Listeners `json:"listeners"`

	// ACL switches access control. With ACL on, every request and connection
	// is denied unless a Service's Rules allow its source identity.
	ACL ACLMode `json:"acl,omitempty"`

	// Services are the meshed Services the proxy can route to, sorted by
	// namespace then name. A Service appears once.
	Services []Service `json:"services,omitempty"`

	// LocalPods are the pods scheduled on this node, with the identity their
	// traffic carries. The proxy identifies a client by the source address of
	// its connection among these pods, never from request headers.
	LocalPods []LocalPod `json:"localPods,omitempty"`

	// Plugins are the middleware plugins Services on this node use, sorted
	// by Name. A Service lists the ones it uses, in order.
	Plugins []Plugin `json:"plugins,omitempty"`
}

// ACLMode is "on" or "off" (default "off").
type ACLMode string

// ACL modes.
const (
	ACLOff ACLMode = "off"
	ACLOn  ACLMode = "on"
)

// Listeners holds node-wide listener ports.
type Listeners struct {
	// HTTP is the port of the one shared HTTP listener (HTTP/1.1, h2c and
	// HTTP/2 with prior knowledge) that serves every HTTP service port.
	// 0 disables HTTP.
	HTTP int32 `json:"http"`
}

// Protocol is the traffic type of a service port.
type Protocol string

// Protocols.
const (
	ProtocolHTTP Protocol = "http"
	ProtocolTCP  Protocol = "tcp"
	ProtocolUDP  Protocol = "udp"
)

// Scheme is how the proxy speaks to the destination pod of an HTTP port.
type Scheme string

// Upstream schemes.
const (
	SchemeHTTP  Scheme = "http"  // HTTP/1.1 cleartext
	SchemeH2C   Scheme = "h2c"   // HTTP/2 cleartext, prior knowledge (gRPC servers)
	SchemeHTTPS Scheme = "https" // TLS, HTTP/2 or HTTP/1.1 negotiated by ALPN
)

// Service is one meshed Kubernetes Service.
type Service struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`

	// Ports are the Service's ports the mesh serves. Port numbers are unique.
	Ports []ServicePort `json:"ports"`

	// Endpoints are the Service's pods, on any node.
	Endpoints []Endpoint `json:"endpoints,omitempty"`

	// Split, when set, sends this Service's traffic to backend Services by
	// weight (SMI TrafficSplit whose root is this Service).
	Split *Split `json:"split,omitempty"`

	// Rules allow sources to reach this Service when ACL is on (SMI
	// TrafficTarget rules compiled per destination). Ignored when ACL is off.
	Rules []AccessRule `json:"rules,omitempty"`

	// Resilience configures retries, timeouts, circuit breaking, rate
	// limiting and outlier ejection for traffic addressed to this Service.
	Resilience Resilience `json:"resilience,omitempty"`

	// Plugins names entries of Config.Plugins this Service's HTTP requests
	// go through, outermost first.
	Plugins []string `json:"plugins,omitempty"`
}

// Key returns "namespace/name".
func (s *Service) Key() string { return s.Namespace + "/" + s.Name }

// ServicePort is one port of a Service.
type ServicePort struct {
	// Name is the Service port name (may be empty for single-port Services).
	Name string `json:"name,omitempty"`
	// Port is the Service port number clients address (the `:port` of the
	// mesh name for HTTP). 1-65535.
	Port int32 `json:"port"`
	// TargetPort is the port on the pod, already resolved from a named
	// targetPort by the controller. An Endpoint may override it. 1-65535.
	TargetPort int32 `json:"targetPort"`
	// Protocol is the traffic type: http, tcp or udp.
	Protocol Protocol `json:"protocol"`
	// Scheme is the upstream scheme for http ports: http (default), h2c or
	// https. Must be empty for tcp and udp.
	Scheme Scheme `json:"scheme,omitempty"`
	// TLS configures the upstream connection when Scheme is https.
	TLS *UpstreamTLS `json:"tls,omitempty"`
	// ListenPort is the proxy's own port for this tcp or udp service port.
	// Required for tcp and udp, unique per protocol on the node; must be 0
	// for http (HTTP shares Listeners.HTTP).
	ListenPort int32 `json:"listenPort,omitempty"`
}

// UpstreamTLS configures TLS towards pods.
type UpstreamTLS struct {
	// ServerName is the name the pod's certificate must carry. Default:
	// `<service>.<namespace>.svc`.
	ServerName string `json:"serverName,omitempty"`
	// CAPEM is a PEM bundle of CAs to trust. Empty: the system roots.
	CAPEM string `json:"caPEM,omitempty"`
	// InsecureSkipVerify disables certificate verification. For debugging only.
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
}

// Endpoint is one pod behind a Service.
type Endpoint struct {
	// IP is the pod IP (IPv4 or IPv6, no zone).
	IP string `json:"ip"`
	// Node is the node the pod runs on.
	Node string `json:"node,omitempty"`
	// Zone is the topology zone of the pod's node, for zone preference.
	Zone string `json:"zone,omitempty"`
	// Ready is the pod's readiness. Ready endpoints are always preferred; a
	// not-ready endpoint gets traffic only when no ready one is left.
	Ready bool `json:"ready"`
	// Ports overrides ServicePort.TargetPort for this pod, keyed by service
	// port name, when a named targetPort resolves differently on this pod.
	Ports map[string]int32 `json:"ports,omitempty"`
}

// Split is an SMI TrafficSplit rooted at the enclosing Service.
type Split struct {
	// Source names the TrafficSplit, e.g. "shop/api-canary", for messages.
	Source string `json:"source,omitempty"`
	// Backends receive traffic in proportion to Weight. Each names a Service
	// in the same namespace present in Config.Services that has every port of
	// the root with the same number and protocol. A backend may be the root
	// itself (its own endpoints are used).
	Backends []Backend `json:"backends"`
	// Matches, when set, restrict the split to HTTP requests matching any of
	// them (A/B testing); other requests go to the root's own endpoints.
	// Only valid when every port of the root is http.
	Matches []match.HTTPSpec `json:"matches,omitempty"`
}

// Backend is one weighted TrafficSplit backend.
type Backend struct {
	Service string `json:"service"`
	// Weight is relative, >= 0. At least one backend must weigh > 0.
	Weight int32 `json:"weight"`
}

// Identity is the identity a workload's traffic carries: its
// ServiceAccount. Today it is derived from the client pod's IP; with mTLS it
// will come from the peer certificate (a SPIFFE ID naming the same pair).
type Identity struct {
	ServiceAccount string `json:"serviceAccount"`
	Namespace      string `json:"namespace"`
}

// String returns "namespace/serviceAccount".
func (i Identity) String() string { return i.Namespace + "/" + i.ServiceAccount }

// AccessRule allows listed sources to reach the Service, optionally limited
// to HTTP matches and/or ports.
type AccessRule struct {
	// Source says where the rule comes from, for 403 reasons and debugging,
	// e.g. "TrafficTarget shop/api-access rule HTTPRouteGroup shop/api match metrics".
	Source string `json:"source"`
	// Sources are the allowed identities. At least one.
	Sources []Identity `json:"sources"`
	// Ports limits the rule to these Service port numbers. Empty: all ports.
	Ports []int32 `json:"ports,omitempty"`
	// HTTP limits the rule, for http ports, to requests matching any of these.
	// Empty: any request. Ignored for tcp and udp ports.
	HTTP []match.HTTPSpec `json:"http,omitempty"`
}

// LocalPod is a pod running on this node.
type LocalPod struct {
	// IP is the pod IP. Unique among local pods.
	IP string `json:"ip"`
	// Name is the pod name, for logs.
	Name string `json:"name,omitempty"`
	// Identity is the pod's ServiceAccount and namespace.
	Identity Identity `json:"identity"`
}

// Resilience configures how the proxy treats one Service's traffic. Every
// zero value means "off" except where a default is documented.
type Resilience struct {
	// Timeout bounds a whole HTTP request, retries and response body
	// included. 0: none (streaming RPCs).
	Timeout Duration `json:"timeout,omitempty"`
	// ConnectTimeout bounds dialing a pod. Default 2s.
	ConnectTimeout Duration `json:"connectTimeout,omitempty"`
	// Retries, for HTTP.
	Retries *Retries `json:"retries,omitempty"`
	// CircuitBreaker stops sending to a backend Service that keeps failing.
	CircuitBreaker *CircuitBreaker `json:"circuitBreaker,omitempty"`
	// RateLimit caps requests (HTTP) or new connections/flows (TCP/UDP)
	// accepted by this proxy for the Service.
	RateLimit *RateLimit `json:"rateLimit,omitempty"`
	// Outlier ejects single pods after consecutive failures. Defaults apply
	// when nil: 5 failures, 10s base, 5m max, at most 50% ejected.
	Outlier *Outlier `json:"outlier,omitempty"`
	// SameZone prefers endpoints in this node's zone when any is healthy.
	SameZone bool `json:"sameZone,omitempty"`
	// UDPIdleTimeout ends a UDP flow after this long without packets.
	// Default 60s.
	UDPIdleTimeout Duration `json:"udpIdleTimeout,omitempty"`
}

// Retries configure HTTP retries. A request is retried only when its body
// can be replayed (empty or buffered) and its method is idempotent, or when
// the connection to the pod failed before anything was sent.
type Retries struct {
	// Attempts is the maximum number of tries, first included. 1-10.
	Attempts int32 `json:"attempts"`
	// PerTryTimeout bounds each try until response headers. 0: none.
	PerTryTimeout Duration `json:"perTryTimeout,omitempty"`
	// On lists the response statuses that are retried. Default [502, 503, 504].
	On []int32 `json:"on,omitempty"`
	// BackoffBase and BackoffMax shape exponential backoff with full jitter.
	// Defaults 25ms and 250ms.
	BackoffBase Duration `json:"backoffBase,omitempty"`
	BackoffMax  Duration `json:"backoffMax,omitempty"`
	// Budget is the largest ratio of retries to requests, 0-1. Default 0.2.
	Budget float64 `json:"budget,omitempty"`
	// MaxBodyBytes is the largest request body buffered for replay.
	// Default 64KiB. Larger bodies are streamed and never retried.
	MaxBodyBytes int64 `json:"maxBodyBytes,omitempty"`
}

// CircuitBreaker opens (fails fast with 503) after failures and lets one
// probe through after OpenFor. Set ConsecutiveFailures, FailureRatio or both.
type CircuitBreaker struct {
	// ConsecutiveFailures opens the breaker after that many failures in a row.
	ConsecutiveFailures int32 `json:"consecutiveFailures,omitempty"`
	// FailureRatio (0-1] opens the breaker when the failure ratio over Window
	// reaches it, with at least MinRequests requests in the window.
	FailureRatio float64  `json:"failureRatio,omitempty"`
	MinRequests  int32    `json:"minRequests,omitempty"` // default 20
	Window       Duration `json:"window,omitempty"`      // default 10s
	// OpenFor is how long the breaker stays open before probing. Default 5s.
	OpenFor Duration `json:"openFor,omitempty"`
}

// RateLimit is a token bucket.
type RateLimit struct {
	// RPS is the sustained rate (requests or new connections per second). > 0.
	RPS float64 `json:"rps"`
	// Burst is the bucket size. Default: ceil(RPS).
	Burst int32 `json:"burst,omitempty"`
}

// Outlier configures passive outlier ejection: a pod failing Consecutive
// times in a row is ejected for BaseEjection × 2^(times ejected before),
// capped at MaxEjection.
type Outlier struct {
	Consecutive       int32    `json:"consecutive,omitempty"`       // default 5; -1 disables
	BaseEjection      Duration `json:"baseEjection,omitempty"`      // default 10s
	MaxEjection       Duration `json:"maxEjection,omitempty"`       // default 5m
	MaxEjectedPercent int32    `json:"maxEjectedPercent,omitempty"` // default 50
}

// Plugin is a middleware plugin: Go source interpreted by the proxy
// (yaegi), with Traefik's plugin contract (CreateConfig, New). The
// controller ships the source itself, so a proxy needs nothing but its
// config to load it.
type Plugin struct {
	// Name identifies the plugin in this config ("namespace/name" of the
	// object that declares it); Services refer to it by this name.
	Name string `json:"name"`
	// Version changes whenever Module, Files or Config do (the controller
	// sets a content hash). A proxy compiles each version once.
	Version string `json:"version"`
	// Module is the Go import path of the plugin package, e.g.
	// "github.com/acme/addheader".
	Module string `json:"module"`
	// Files are the package's source files: path relative to the module
	// root ("addheader.go", "internal/x/x.go") → Go source.
	Files map[string]string `json:"files"`
	// Config is decoded into the plugin's *Config (from CreateConfig).
	Config json.RawMessage `json:"config,omitempty"`
	// Stage places the plugin relative to the built-in steps:
	// "afterAccess" (default: the request was allowed and not rate
	// limited; runs before the split picks a backend) or "beforeAccess"
	// (sees every request, even those access control will deny).
	Stage PluginStage `json:"stage,omitempty"`
	// FailurePolicy says what a Service does while this plugin cannot be
	// loaded: "fail" (default: answer 503 naming the plugin) or "ignore"
	// (serve without it).
	FailurePolicy PluginFailurePolicy `json:"failurePolicy,omitempty"`
}

// PluginStage is where a plugin runs; see Plugin.Stage.
type PluginStage string

// Plugin stages.
const (
	StageAfterAccess  PluginStage = "afterAccess"
	StageBeforeAccess PluginStage = "beforeAccess"
)

// PluginFailurePolicy is what happens while a plugin cannot load.
type PluginFailurePolicy string

// Plugin failure policies.
const (
	FailClosed PluginFailurePolicy = "fail"
	FailOpen   PluginFailurePolicy = "ignore"
)
