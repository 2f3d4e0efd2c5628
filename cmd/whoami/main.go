// Command whoami is the local cluster's test workload. It answers with its
// pod name, the request it saw and the source address it saw, over
// HTTP/1.1, h2c with prior knowledge and gRPC (one port), raw TCP and UDP.
//
//	whoami [--http :8080] [--tcp :9000] [--udp :9001] [--name NAME]
//	whoami --grpc-check ADDR [--authority HOST]   (a gRPC health-check client)
//	whoami --load URL [--qps N] [--duration D] [--host H]   (a constant-rate client)
//	whoami --raw HOST:PORT [--raw-wait D] [--raw-slow] < request   (raw TCP probes)
//
// gRPC: the standard health service; every response carries the headers
// x-whoami (the name) and x-remote (the source address it saw).
// HTTP: GET any path returns a text report; /healthz returns 200 "ok";
// ?status=N answers with that status; ?delay=DURATION waits first.
// TCP: on connect it writes one report line, then echoes what it reads.
// UDP: each datagram is answered with a report line followed by the payload.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	httpAddr := flag.String("http", ":8080", "HTTP/1.1 + h2c listen address (empty to disable)")
	tcpAddr := flag.String("tcp", ":9000", "TCP echo listen address (empty to disable)")
	udpAddr := flag.String("udp", ":9001", "UDP echo listen address (empty to disable)")
	name := flag.String("name", "", "name to report (default: $POD_NAME, else $HOSTNAME, else the hostname)")
	grpcCheck := flag.String("grpc-check", "", "act as a client: gRPC health-check ADDR (host:port) over h2c and print who answered")
	authority := flag.String("authority", "", "with --grpc-check: the :authority to send (e.g. a mesh name)")
	var lo loadOptions
	flag.StringVar(&lo.url, "load", "", "act as a client: send GETs to this URL at --qps for --duration, then print a JSON report of every failure")
	flag.StringVar(&lo.host, "host", "", "with --load: the Host header to send")
	flag.Float64Var(&lo.qps, "qps", 50, "with --load: requests per second (open loop)")
	flag.DurationVar(&lo.duration, "duration", 10*time.Second, "with --load: how long to send (SIGTERM stops early and reports)")
	flag.DurationVar(&lo.timeout, "timeout", 3*time.Second, "with --load: per-request timeout")
	raw := flag.String("raw", "", "act as a client: send stdin to this HOST:PORT over TCP, print the answer and whether the server closed the connection")
	rawWait := flag.Duration("raw-wait", 5*time.Second, "with --raw: how long to wait for the server")
	rawSlow := flag.Bool("raw-slow", false, "with --raw: send one byte a second (slowloris)")
	flag.Parse()
	if *raw != "" {
		if err := runRaw(*raw, *rawWait, *rawSlow, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "whoami:", err)
			os.Exit(1)
		}
		return
	}
	if lo.url != "" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		err := runLoad(ctx, lo, os.Stdout)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "whoami:", err)
			os.Exit(2)
		}
		return
	}
	if *grpcCheck != "" {
		if err := checkGRPC(*grpcCheck, *authority, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "whoami:", err)
			os.Exit(1)
		}
		return
	}
	if *name == "" {
		*name = os.Getenv("POD_NAME")
	}
	if *name == "" {
		*name = os.Getenv("HOSTNAME") // the pod name, as the kubelet sets it
	}
	if *name == "" {
		*name, _ = os.Hostname()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errc := make(chan error, 3)
	var srv *http.Server
	if *httpAddr != "" {
		srv = &http.Server{
			Addr:              *httpAddr,
			Handler:           withGRPC(newGRPCServer(*name), handler(*name)),
			ReadHeaderTimeout: 10 * time.Second,
			Protocols:         new(http.Protocols),
		}
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge (gRPC's way)
		go func() { errc <- srv.ListenAndServe() }()
	}
	if *tcpAddr != "" {
		l, err := net.Listen("tcp", *tcpAddr)
		if err != nil {
			log.Fatalf("whoami: tcp %s: %v", *tcpAddr, err)
		}
		go serveTCP(l, *name)
	}
	if *udpAddr != "" {
		pc, err := net.ListenPacket("udp", *udpAddr)
		if err != nil {
			log.Fatalf("whoami: udp %s: %v", *udpAddr, err)
		}
		go serveUDP(pc, *name)
	}
	log.Printf("whoami %s: http %q tcp %q udp %q", *name, *httpAddr, *tcpAddr, *udpAddr)
	select {
	case <-ctx.Done():
		log.Printf("whoami %s: terminating", *name)
		if srv != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			log.Fatalf("whoami: %v", err)
		}
	}
}

func handler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			_, _ = io.WriteString(w, "ok\n")
			return
		}
		if d := r.URL.Query().Get("delay"); d != "" {
			dur, err := time.ParseDuration(d)
			if err != nil {
				http.Error(w, "delay: "+err.Error(), http.StatusBadRequest)
				return
			}
			select {
			case <-time.After(dur):
			case <-r.Context().Done():
				return
			}
		}
		status := http.StatusOK
		if s := r.URL.Query().Get("status"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 100 || n > 599 {
				http.Error(w, "status: want 100-599", http.StatusBadRequest)
				return
			}
			status = n
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Whoami", name)
		w.WriteHeader(status)
		var b strings.Builder
		fmt.Fprintf(&b, "Hostname: %s\n", name)
		fmt.Fprintf(&b, "RemoteAddr: %s\n", r.RemoteAddr)
		fmt.Fprintf(&b, "%s %s %s\n", r.Method, r.URL.RequestURI(), r.Proto)
		fmt.Fprintf(&b, "Host: %s\n", r.Host)
		keys := make([]string, 0, len(r.Header))
		for k := range r.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			for _, v := range r.Header[k] {
				fmt.Fprintf(&b, "%s: %s\n", k, v)
			}
		}
		_, _ = io.WriteString(w, b.String())
	})
}

func serveTCP(l net.Listener, name string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer func() { _ = c.Close() }()
			fmt.Fprintf(c, "Hostname: %s RemoteAddr: %s\n", name, c.RemoteAddr())
			_, _ = io.Copy(c, bufio.NewReader(c))
		}()
	}
}

func serveUDP(pc net.PacketConn, name string) {
	buf := make([]byte, 64*1024)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		reply := fmt.Appendf(nil, "Hostname: %s RemoteAddr: %s\n", name, addr)
		_, _ = pc.WriteTo(append(reply, buf[:n]...), addr)
	}
}
