package settings

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	cases := []struct {
		name, in string
		want     string // substring of the error; "" = valid
		check    func(*testing.T, Settings)
	}{
		{name: "empty gives defaults", in: "", check: func(t *testing.T, s Settings) {
			if s.MeshDomain != "mesh" || s.ProxyHTTPPort != 10000 || s.Debounce.Quiet.D() != 10*time.Millisecond {
				t.Errorf("defaults not applied: %+v", s)
			}
		}},
		{name: "override", in: "meshDomain: corp.mesh\nextraDomains: [traefik.mesh]\nacl: true\ndebounce: {quiet: 5ms, max: 1s}\n", check: func(t *testing.T, s Settings) {
			if got := s.Domains(); len(got) != 2 || got[0] != "corp.mesh" || got[1] != "traefik.mesh" || !s.ACL || s.Debounce.Max.D() != time.Second {
				t.Errorf("got %+v", s)
			}
		}},
		{name: "typo is an error", in: "meshDomian: x\n", want: `unknown field "meshDomian"`},
		{name: "bad domain", in: "meshDomain: Bad_Domain\n", want: "meshDomain: \"Bad_Domain\" is not a DNS name"},
		{name: "cluster domain", in: "meshDomain: cluster.local\n", want: "overlaps the cluster's own DNS names"},
		{name: "duplicate domain", in: "extraDomains: [mesh]\n", want: "extraDomains[0]: \"mesh\" is listed twice"},
		{name: "port range holds http port", in: "proxyHTTPPort: 20001\n", want: "contains proxyHTTPPort 20001"},
		{name: "inverted range", in: "listenPorts: {min: 3000, max: 2000}\n", want: "listenPorts: must be 1 <= min <= max"},
		{name: "traffic type", in: "defaultTrafficType: grpc\n", want: "defaultTrafficType: must be http, tcp or udp"},
		{name: "duration number", in: "debounce: {quiet: 5, max: 1s}\n", want: "duration string"},
		{name: "empty selector", in: "proxySelector: {}\n", want: "proxySelector: must name at least one label"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse([]byte(tc.in))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				tc.check(t, s)
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}
