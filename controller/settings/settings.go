package settings

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/smi/annotations"
)

// Settings are the mesh-wide settings. The zero value is not usable; start
// from Default() or Load.
type Settings struct {
	// MeshNamespace holds the controller, the proxies and the shadow Services.
	MeshNamespace string `json:"meshNamespace"`
	// MeshDomain is the DNS suffix of mesh names: <service>.<namespace>.<meshDomain>.
	MeshDomain string `json:"meshDomain"`
	// ExtraDomains are answered like MeshDomain, e.g. "traefik.mesh" for
	// users moving from Traefik Mesh. The proxy routes only MeshDomain by
	// Host header, so clients of an extra domain must use TCP ports or set
	// Host themselves; see docs/controller.md.
	ExtraDomains []string `json:"extraDomains,omitempty"`
	// ACL turns SMI access control on: with it, traffic is denied unless a
	// TrafficTarget allows it.
	ACL bool `json:"acl"`
	// DefaultTrafficType applies to Services without trellis.io/traffic-type.
	DefaultTrafficType annotations.TrafficTypeValue `json:"defaultTrafficType"`
	// ProxyHTTPPort is the node proxy's shared HTTP listener.
	ProxyHTTPPort int32 `json:"proxyHTTPPort"`
	// ListenPorts is the range the controller assigns TCP and UDP service
	// ports from (one proxy port per meshed TCP/UDP service port).
	ListenPorts PortRange `json:"listenPorts"`
	// ProxySelector are the labels of the proxy pods; shadow Services select them.
	ProxySelector map[string]string `json:"proxySelector"`
	// ProxyServiceAccount is the ServiceAccount (in MeshNamespace) whose
	// tokens may open config streams.
	ProxyServiceAccount string `json:"proxyServiceAccount"`
	// DNSService is the Service (in MeshNamespace) in front of the
	// controllers' DNS responders; CoreDNS forwards the mesh domains to it.
	DNSService string `json:"dnsService"`
	// CoreDNS configures the stub-domain integration.
	CoreDNS CoreDNS `json:"coreDNS"`
	// Debounce shapes rebuilds: a burst of events becomes one rebuild that
	// starts Quiet after the last event, and at most Max after the first.
	Debounce Debounce `json:"debounce"`
}

// PortRange is an inclusive port range.
type PortRange struct {
	Min int32 `json:"min"`
	Max int32 `json:"max"`
}

// Size is the number of ports in the range.
func (r PortRange) Size() int { return int(r.Max-r.Min) + 1 }

// CoreDNS says where the Corefile is.
type CoreDNS struct {
	// Enabled lets the leader add (and keep) the marked stub-domain block.
	Enabled   bool   `json:"enabled"`
	Namespace string `json:"namespace"`
	ConfigMap string `json:"configMap"`
	Key       string `json:"key"`
}

// Debounce durations.
type Debounce struct {
	Quiet Duration `json:"quiet"`
	Max   Duration `json:"max"`
}

// Duration is a time.Duration written as a Go duration string.
type Duration time.Duration

// D is the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes "250ms".
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Duration(d).String() + `"`), nil
}

// UnmarshalJSON reads "250ms".
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if len(b) < 2 || b[0] != '"' {
		return fmt.Errorf("must be a duration string such as \"20ms\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Default returns the built-in settings.
func Default() Settings {
	return Settings{
		MeshNamespace:       "trellis-system",
		MeshDomain:          "mesh",
		DefaultTrafficType:  annotations.HTTP,
		ProxyHTTPPort:       10000,
		ListenPorts:         PortRange{Min: 20000, Max: 59999},
		ProxySelector:       map[string]string{"app.kubernetes.io/name": "trellis-proxy"},
		ProxyServiceAccount: "trellis-proxy",
		DNSService:          "trellis-dns",
		CoreDNS:             CoreDNS{Enabled: true, Namespace: "kube-system", ConfigMap: "coredns", Key: "Corefile"},
		Debounce:            Debounce{Quiet: Duration(10 * time.Millisecond), Max: Duration(200 * time.Millisecond)},
	}
}

// Parse reads YAML or JSON settings over the defaults. Unknown keys are
// errors (a typo must not silently keep a default).
func Parse(data []byte) (Settings, error) {
	s := Default()
	s.ProxySelector = nil // maps merge on unmarshal; a given selector replaces the default
	if err := yaml.UnmarshalStrict(data, &s); err != nil {
		return Settings{}, fmt.Errorf("settings: %w", err)
	}
	var keys map[string]any
	_ = yaml.Unmarshal(data, &keys)
	if _, given := keys["proxySelector"]; !given {
		s.ProxySelector = Default().ProxySelector
	}
	if err := s.Validate(); err != nil {
		return Settings{}, err
	}
	return s, nil
}

// Load reads settings from a file ("" gives the defaults).
func Load(path string) (Settings, error) {
	if path == "" {
		s := Default()
		return s, s.Validate()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return Settings{}, fmt.Errorf("settings file: %w", err)
	}
	s, err := Parse(b)
	if err != nil {
		return Settings{}, fmt.Errorf("settings file %s: %w", path, err)
	}
	return s, nil
}

// Domains returns MeshDomain followed by ExtraDomains.
func (s *Settings) Domains() []string { return append([]string{s.MeshDomain}, s.ExtraDomains...) }

// Validate reports every bad setting.
func (s *Settings) Validate() error {
	var errs []string
	bad := func(key, format string, args ...any) {
		errs = append(errs, key+": "+fmt.Sprintf(format, args...))
	}
	if msgs := validation.IsDNS1123Label(s.MeshNamespace); len(msgs) > 0 {
		bad("meshNamespace", "%q is not a namespace name: %s", s.MeshNamespace, strings.Join(msgs, "; "))
	}
	seen := map[string]bool{}
	for i, d := range s.Domains() {
		key := "meshDomain"
		if i > 0 {
			key = fmt.Sprintf("extraDomains[%d]", i-1)
		}
		if msgs := validation.IsDNS1123Subdomain(d); len(msgs) > 0 {
			bad(key, "%q is not a DNS name: %s", d, strings.Join(msgs, "; "))
		}
		if d == "svc" || strings.HasSuffix(d, ".svc") || strings.Contains(d, "cluster.local") || d == "local" {
			bad(key, "%q overlaps the cluster's own DNS names; pick a domain of its own such as \"mesh\"", d)
		}
		if seen[d] {
			bad(key, "%q is listed twice", d)
		}
		seen[d] = true
	}
	switch s.DefaultTrafficType {
	case annotations.HTTP, annotations.TCP, annotations.UDP:
	default:
		bad("defaultTrafficType", "must be http, tcp or udp, got %q", s.DefaultTrafficType)
	}
	if s.ProxyHTTPPort < 1 || s.ProxyHTTPPort > 65535 {
		bad("proxyHTTPPort", "must be 1-65535, got %d", s.ProxyHTTPPort)
	}
	r := s.ListenPorts
	if r.Min < 1 || r.Max > 65535 || r.Min > r.Max {
		bad("listenPorts", "must be 1 <= min <= max <= 65535, got %d-%d", r.Min, r.Max)
	} else if s.ProxyHTTPPort >= r.Min && s.ProxyHTTPPort <= r.Max {
		bad("listenPorts", "%d-%d contains proxyHTTPPort %d; move one of them", r.Min, r.Max, s.ProxyHTTPPort)
	}
	if len(s.ProxySelector) == 0 {
		bad("proxySelector", "must name at least one label of the proxy pods")
	}
	keys := make([]string, 0, len(s.ProxySelector))
	for k := range s.ProxySelector {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			bad("proxySelector", "key %q: %s", k, strings.Join(msgs, "; "))
		}
		if msgs := validation.IsValidLabelValue(s.ProxySelector[k]); len(msgs) > 0 {
			bad("proxySelector", "value of %q: %s", k, strings.Join(msgs, "; "))
		}
	}
	if msgs := validation.IsDNS1123Subdomain(s.ProxyServiceAccount); len(msgs) > 0 {
		bad("proxyServiceAccount", "%q: %s", s.ProxyServiceAccount, strings.Join(msgs, "; "))
	}
	if msgs := validation.IsDNS1035Label(s.DNSService); len(msgs) > 0 {
		bad("dnsService", "%q is not a Service name: %s", s.DNSService, strings.Join(msgs, "; "))
	}
	if s.CoreDNS.Enabled && (s.CoreDNS.Namespace == "" || s.CoreDNS.ConfigMap == "" || s.CoreDNS.Key == "") {
		bad("coreDNS", "namespace, configMap and key must be set when enabled")
	}
	if s.Debounce.Quiet < 0 || s.Debounce.Max <= 0 || s.Debounce.Quiet > s.Debounce.Max {
		bad("debounce", "need 0 <= quiet <= max and max > 0, got quiet %s max %s", s.Debounce.Quiet.D(), s.Debounce.Max.D())
	}
	if len(errs) > 0 {
		return errors.New("settings are invalid:\n  " + strings.Join(errs, "\n  "))
	}
	return nil
}
