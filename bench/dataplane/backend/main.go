package main

import (
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8081=v1", "comma-separated addr=name pairs")
	flag.Parse()
	errc := make(chan error, 4)
	for _, pair := range strings.Split(*listen, ",") {
		addr, name, ok := strings.Cut(pair, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "backend: -listen %q: want addr=name\n", pair)
			os.Exit(2)
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "backend:", err)
			os.Exit(1)
		}
		body := []byte("hello from " + name + "\n")
		clen := []string{strconv.Itoa(len(body))}
		ctype := []string{"text/plain"}
		bname := []string{name}
		srv := &http.Server{
			ReadHeaderTimeout: 10 * time.Second,
			Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				h := w.Header()
				h["Content-Type"] = ctype
				h["Content-Length"] = clen
				h["X-Backend"] = bname
				_, _ = w.Write(body)
			}),
		}
		go func() { errc <- srv.Serve(l) }()
	}
	fmt.Fprintln(os.Stderr, "backend: serving")
	fmt.Fprintln(os.Stderr, "backend:", <-errc)
	os.Exit(1)
}
