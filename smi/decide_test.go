package smi

import (
	"net/http"
	"os"
	"sync"
	"testing"
)

// TestPolicyConcurrent asks one Policy from many goroutines (run with -race):
// the node proxy and the controller's debug endpoints share one snapshot.
func TestPolicyConcurrent(t *testing.T) {
	f, err := os.Open("testdata/golden/split-v1alpha3.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	objs, svcs, _, _, err := DecodeYAML(f)
	if err != nil {
		t.Fatal(err)
	}
	g, err := os.Open("testdata/golden/access-v1alpha3.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	more, _, _, _, err := DecodeYAML(g)
	if err != nil {
		t.Fatal(err)
	}
	pol := NewPolicy(append(objs, more...), svcs)
	src, dst := Identity{"default", "prometheus"}, Identity{"default", "api-service"}
	req := Request{Protocol: HTTP, Port: 8080, Method: "GET", Path: "/metrics"}
	beta := Request{Protocol: HTTP, Port: 80, Method: "GET", Path: "/", Header: http.Header{"Cookie": {"beta=1"}}}
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				if ok, why := pol.Allowed(src, dst, req); !ok {
					errs <- why.Message
					return
				}
				if d := pol.Split("server", "website", beta); d.ToRoot || d.Backends[0].Service != "website-v2" {
					errs <- d.Reason
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}
