package json2xml

import (
	"testing"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/node-proxy/plugin"
)

const module = "github.com/trellis-mesh/trellis/examples/plugins/json2xml"

// TestInterpreted runs every case through this directory's source loaded
// by the proxy's loader, as the mesh does.
func TestInterpreted(t *testing.T) {
	files, err := plugin.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := config.Plugin{Name: "examples/json2xml", Version: "1", Module: module, Files: files, Config: []byte(tc.config)}
			set := plugin.NewSet([]config.Plugin{p}, nil, nil)
			if errs := set.Errors(); len(errs) > 0 {
				t.Fatal(errs[0])
			}
			chains := set.Chains("legacy/api", []string{p.Name}, 0, nil)
			if u := chains.After.Unavailable(); u != nil {
				t.Fatal(u)
			}
			run(t, chains.Wrap(config.StageAfterAccess, upstream(t, tc.upstream, tc.ctype == "application/xml; charset=utf-8")), i)
		})
	}
}
