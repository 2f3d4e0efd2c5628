package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/trellis-mesh/trellis/node-proxy/httpproxy"
	"github.com/trellis-mesh/trellis/node-proxy/server"
	"github.com/trellis-mesh/trellis/node-proxy/source"
	"github.com/trellis-mesh/trellis/node-proxy/telemetry"
)

func main() {
	cfg := flag.String("config", "", "config JSON file")
	node := flag.String("node", "", "node name")
	admin := flag.String("admin-addr", "", "admin address")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	log, err := zap.NewProduction()
	if err != nil {
		fmt.Fprintln(os.Stderr, "nethttpproxy:", err)
		os.Exit(1)
	}
	log = log.WithOptions(zap.IncreaseLevel(zapcore.WarnLevel))
	access := telemetry.NewAccessLogger(zapcore.Lock(os.Stdout), telemetry.Sampling{First: 100, Thereafter: 100})
	p := server.New(server.Options{
		AdminAddr: *admin,
		NodeName:  *node,
		HTTP:      httpproxy.ServerOptions{DisableFastPath: true},
		Log:       log,
		AccessLog: access,
	})
	if err := p.Run(ctx, &source.File{Path: *cfg}); err != nil {
		fmt.Fprintln(os.Stderr, "nethttpproxy:", err)
		os.Exit(1)
	}
}
