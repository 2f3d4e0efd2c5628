package traffic

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func FuzzParseWhy(f *testing.F) {
	f.Add("frontend-0", "web:80", "GET", "/api", "x-canary=true")
	f.Add("shop/frontend-0", "web.shop.mesh:http", "POST", "/a?b#c", "a=b=c")
	f.Add("a/b/c", "ns/svc/x:0", "get", "api", "=")
	f.Fuzz(func(t *testing.T, from, to, method, path, header string) {
		r, err := parseWhy(from, to, method, path, []string{header}, func(string) bool { return true })
		if err != nil {
			if !strings.HasPrefix(err.Error(), "--") {
				t.Fatalf("error does not name the flag: %v", err)
			}
			return
		}
		if len(validation.IsDNS1035Label(r.toSvc)) > 0 || len(validation.IsDNS1123Subdomain(r.fromPod)) > 0 {
			t.Fatalf("accepted bad names: %+v", r)
		}
		if r.toNS != "" && len(validation.IsDNS1123Label(r.toNS)) > 0 {
			t.Fatalf("accepted a bad namespace: %+v", r)
		}
		if !strings.HasPrefix(r.path, "/") || strings.ContainsAny(r.path, "?#") {
			t.Fatalf("path %q kept a query or lost its slash", r.path)
		}
	})
}
