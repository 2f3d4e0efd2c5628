package config

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/trellis-mesh/trellis/smi/match"
)

// large is a node config with n services, each with three endpoints and one
// HTTP access rule: the size the node proxy's memory target is set for.
func large(n int) *Config {
	c := &Config{Node: "bench", Listeners: Listeners{HTTP: 10000}, ACL: ACLOn}
	for i := range n {
		ns := fmt.Sprintf("team-%02d", i%40)
		s := Service{Namespace: ns, Name: fmt.Sprintf("svc-%04d", i),
			Ports: []ServicePort{{Name: "http", Port: 8080, TargetPort: 8080, Protocol: ProtocolHTTP}},
			Rules: []AccessRule{{Source: "TrafficTarget " + ns + "/callers",
				Sources: []Identity{{ServiceAccount: "caller", Namespace: ns}},
				HTTP:    []match.HTTPSpec{{Name: "api", PathRegex: "/" + ns + "/api/v[0-9]+/.*", Methods: []string{"GET", "POST"}}}}}}
		for k := range 3 {
			s.Endpoints = append(s.Endpoints, Endpoint{IP: fmt.Sprintf("10.%d.%d.%d", 1+k, i/250, 1+i%250), Node: fmt.Sprintf("node-%d", k), Ready: true})
		}
		c.Services = append(c.Services, s)
	}
	for i := range 100 {
		c.LocalPods = append(c.LocalPods, LocalPod{IP: fmt.Sprintf("10.9.0.%d", i+1), Name: fmt.Sprintf("pod-%d", i),
			Identity: Identity{ServiceAccount: "caller", Namespace: fmt.Sprintf("team-%02d", i%40)}})
	}
	c.Version = c.Hash()
	return c
}

// BenchmarkLoadFile1000 loads a 1,000-service config from a file, as the
// proxy does at start: B/op is the garbage behind its start-up memory peak.
func BenchmarkLoadFile1000(b *testing.B) {
	data, err := json.Marshal(large(1000))
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "config.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := LoadFile(path); err != nil {
			b.Fatal(err)
		}
	}
}
