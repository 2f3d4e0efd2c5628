package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/trellis-mesh/trellis/node-proxy/config"
	"github.com/trellis-mesh/trellis/smi/match"
)

// The benchmark's topology: one backend process with two ports, v1 and v2;
// every proxy sends 80% of requests to v1 and 20% to v2, and admits only
// GETs from 127.0.0.1 (the load generator's address).
const (
	meshHost     = "api.shop.mesh"
	clientIP     = "127.0.0.1"
	outsiderIP   = "127.0.0.3" // not a pod: Trellis must deny it
	totalSvcs    = 1000        // services in Trellis's config (the RSS target is for 1,000)
	fillerPods   = 100         // other pods on the node
	weightV1     = 80
	weightV2     = 20
	splitRequest = 1000 // requests of the split check
)

type ports struct {
	v1, v2              int // backend
	trellis, trellisTCP int
	trellisAdmin        int
	haproxy, haproxyTCP int
	nginx               int
	rproxy              int
}

// trellisConfig is the node proxy's static config: shop/api split 80/20
// over api-v1 and api-v2 with ACL on, a TCP service shop/db, and filler
// services with endpoints and rules up to totalSvcs.
func trellisConfig(p ports) *config.Config {
	web := config.Identity{ServiceAccount: "web", Namespace: "shop"}
	httpPort := func(target int) []config.ServicePort {
		return []config.ServicePort{{Name: "web", Port: 80, TargetPort: int32(target), Protocol: config.ProtocolHTTP}}
	}
	ep := func(port int) []config.Endpoint {
		return []config.Endpoint{{IP: "127.0.0.1", Node: "bench", Ready: true, Ports: map[string]int32{"web": int32(port)}}}
	}
	allowGET := []config.AccessRule{{
		Source:  "TrafficTarget shop/api-access rule HTTPRouteGroup shop/api match all-get",
		Sources: []config.Identity{web},
		HTTP:    []match.HTTPSpec{{Name: "all-get", PathRegex: "/.*", Methods: []string{"GET"}}},
	}}
	c := &config.Config{
		Node:      "bench",
		Listeners: config.Listeners{HTTP: int32(p.trellis)},
		ACL:       config.ACLOn,
		Services: []config.Service{
			{Namespace: "shop", Name: "api", Ports: httpPort(p.v1), Endpoints: ep(p.v1), Rules: allowGET,
				Split: &config.Split{Source: "TrafficSplit shop/api-canary", Backends: []config.Backend{
					{Service: "api-v1", Weight: weightV1}, {Service: "api-v2", Weight: weightV2}}}},
			{Namespace: "shop", Name: "api-v1", Ports: httpPort(p.v1), Endpoints: ep(p.v1), Rules: allowGET},
			{Namespace: "shop", Name: "api-v2", Ports: httpPort(p.v2), Endpoints: ep(p.v2), Rules: allowGET},
			{Namespace: "shop", Name: "db", Endpoints: ep(p.v1),
				Ports: []config.ServicePort{{Name: "web", Port: 5432, TargetPort: int32(p.v1), Protocol: config.ProtocolTCP, ListenPort: int32(p.trellisTCP)}},
				Rules: []config.AccessRule{{Source: "TrafficTarget shop/db-access", Sources: []config.Identity{web}}}},
		},
		LocalPods: []config.LocalPod{{IP: clientIP, Name: "web-0", Identity: web}},
	}
	for i := len(c.Services); i < totalSvcs; i++ {
		ns := fmt.Sprintf("team-%02d", i%40)
		s := config.Service{Namespace: ns, Name: fmt.Sprintf("svc-%04d", i),
			Ports: []config.ServicePort{{Name: "http", Port: 8080, TargetPort: 8080, Protocol: config.ProtocolHTTP}},
			Rules: []config.AccessRule{{Source: "TrafficTarget " + ns + "/callers",
				Sources: []config.Identity{{ServiceAccount: "caller", Namespace: ns}},
				// One HTTPRouteGroup per namespace, as teams tend to have.
				HTTP: []match.HTTPSpec{{Name: "api", PathRegex: "/" + ns + "/api/v[0-9]+/.*", Methods: []string{"GET", "POST"}}}}}}
		for k := range 3 {
			s.Endpoints = append(s.Endpoints, config.Endpoint{IP: fmt.Sprintf("10.%d.%d.%d", 1+k, i/250, 1+i%250), Node: fmt.Sprintf("node-%d", k), Ready: true})
		}
		c.Services = append(c.Services, s)
	}
	for i := range fillerPods {
		c.LocalPods = append(c.LocalPods, config.LocalPod{IP: fmt.Sprintf("10.244.0.%d", 10+i), Name: fmt.Sprintf("pod-%d", i),
			Identity: config.Identity{ServiceAccount: "caller", Namespace: fmt.Sprintf("team-%02d", i%40)}})
	}
	c.Version = c.Hash()
	return c
}

func writeTrellisConfig(dir string, p ports) (string, error) {
	c := trellisConfig(p)
	if err := c.Validate(); err != nil {
		return "", fmt.Errorf("generated trellis config: %w", err)
	}
	path := filepath.Join(dir, "trellis.json")
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return path, c.Encode(f)
}

// haproxyConfig is the HAProxy peer: one thread, the same split and ACL,
// keep-alive to the backend, no logging (as for every peer).
func haproxyConfig(p ports) string {
	return fmt.Sprintf(`global
    nbthread 1
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    option http-keep-alive

frontend http
    bind 127.0.0.1:%[1]d
    acl from_web src %[6]s
    acl is_get method GET
    http-request deny deny_status 403 unless from_web is_get
    default_backend api

backend api
    balance roundrobin
    http-reuse always
    server v1 127.0.0.1:%[2]d weight %[4]d
    server v2 127.0.0.1:%[3]d weight %[5]d

frontend tcp
    mode tcp
    bind 127.0.0.1:%[7]d
    tcp-request connection reject unless { src %[6]s }
    default_backend db

backend db
    mode tcp
    server v1 127.0.0.1:%[2]d
`, p.haproxy, p.v1, p.v2, weightV1, weightV2, clientIP, p.haproxyTCP)
}

// nginxConfig is the nginx peer: one worker process, the same split and
// ACL, keep-alive to the backend, no access log.
func nginxConfig(dir string, p ports) string {
	return fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log error;

events {
    worker_connections 4096;
}

http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 60s;

    upstream api {
        server 127.0.0.1:%[3]d weight=%[5]d;
        server 127.0.0.1:%[4]d weight=%[6]d;
        keepalive 256;
    }

    server {
        listen 127.0.0.1:%[2]d;
        location / {
            allow %[7]s;
            deny all;
            limit_except GET { deny all; }
            proxy_pass http://api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }
    }
}
`, dir, p.nginx, p.v1, p.v2, weightV1, weightV2, clientIP)
}
