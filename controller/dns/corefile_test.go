package dns

import (
	"errors"
	"strings"
	"testing"
)

const kubeadm = `.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30
    loop
    reload
    loadbalance
}
`

func TestApplyIdempotentAndReversible(t *testing.T) {
	domains := []string{"mesh", "traefik.mesh"}
	block := Block(domains, "10.96.0.53")
	once, changed, err := Apply(kubeadm, block, domains)
	if err != nil || !changed {
		t.Fatalf("first apply: changed %v, %v", changed, err)
	}
	if !strings.Contains(once, "mesh:53 traefik.mesh:53 {\n    errors\n    cache 5\n    forward . 10.96.0.53\n}") {
		t.Fatalf("block not in the Corefile:\n%s", once)
	}
	twice, changed, err := Apply(once, block, domains)
	if err != nil || changed || twice != once {
		t.Fatalf("second apply changed the Corefile (%v, %v)", changed, err)
	}
	// A new upstream replaces the block in place.
	moved, changed, err := Apply(once, Block(domains, "10.96.0.54"), domains)
	if err != nil || !changed || strings.Count(moved, BeginMarker) != 1 || !strings.Contains(moved, "10.96.0.54") || strings.Contains(moved, "10.96.0.53") {
		t.Fatalf("replace: %v %v\n%s", changed, err, moved)
	}
	back, changed, err := Remove(moved)
	if err != nil || !changed || back != kubeadm {
		t.Fatalf("remove did not restore the original (%v, %v):\n%q", changed, err, back)
	}
	if _, changed, _ := Remove(kubeadm); changed {
		t.Error("remove on a Corefile without the block changed it")
	}
}

func TestApplyRefusesUnsupported(t *testing.T) {
	domains := []string{"mesh"}
	block := Block(domains, "10.96.0.53")
	cases := []struct{ name, corefile, want string }{
		{"no root block", "example.org:53 {\n  whoami\n}\n", "no root server block"},
		{"someone else's mesh block", kubeadm + "mesh:53 {\n  forward . 1.1.1.1\n}\n", `server block for "mesh" (line 21)`},
		{"half a block", kubeadm + BeginMarker + "\nmesh:53 {\n}\n", "only one of the trellis-mesh markers"},
		{"two blocks", kubeadm + block + block, "block twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Apply(tc.corefile, block, domains)
			var ue *UnsupportedError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want UnsupportedError containing %q", err, tc.want)
			}
		})
	}
}

func FuzzApplyRemove(f *testing.F) {
	f.Add(kubeadm)
	f.Add(".:53 {\n}\n# comment {\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, corefile string) {
		domains := []string{"mesh"}
		if strings.Contains(corefile, "trellis-mesh") {
			return
		}
		out, changed, err := Apply(corefile, Block(domains, "10.0.0.1"), domains)
		if err != nil {
			return
		}
		if !changed {
			t.Fatal("apply to a Corefile without the block changed nothing")
		}
		back, _, err := Remove(out)
		if err != nil {
			t.Fatal(err)
		}
		want := corefile
		if want != "" && !strings.HasSuffix(want, "\n") {
			want += "\n"
		}
		if back != want {
			t.Fatalf("remove(apply(x)) = %q, want %q", back, want)
		}
	})
}
