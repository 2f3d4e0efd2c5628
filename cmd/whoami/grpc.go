package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
)

// newGRPCServer serves the standard health service and stamps every
// response with who answered and whom it saw.
func newGRPCServer(name string) *grpc.Server {
	s := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
		remote := ""
		if p, ok := peer.FromContext(ctx); ok {
			remote = p.Addr.String()
		}
		_ = grpc.SetHeader(ctx, metadata.Pairs("x-whoami", name, "x-remote", remote))
		return next(ctx, req)
	}))
	healthpb.RegisterHealthServer(s, health.NewServer())
	return s
}

// withGRPC sends HTTP/2 requests with a gRPC content type to the gRPC
// server and everything else to h.
func withGRPC(g *grpc.Server, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			g.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// checkGRPC calls the health service at addr over h2c and prints the
// answering name, the address it saw and the serving status.
func checkGRPC(addr, authority string, out io.Writer) error {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if authority != "" {
		opts = append(opts, grpc.WithAuthority(authority))
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return fmt.Errorf("grpc %s: %w", addr, err)
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var md metadata.MD
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md))
	if err != nil {
		return fmt.Errorf("grpc health check %s: %w", addr, err)
	}
	first := func(k string) string {
		if v := md.Get(k); len(v) > 0 {
			return v[0]
		}
		return ""
	}
	_, err = fmt.Fprintf(out, "Hostname: %s\nRemoteAddr: %s\nStatus: %s\n", first("x-whoami"), first("x-remote"), resp.GetStatus())
	return err
}
