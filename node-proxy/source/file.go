package source

import (
	"context"
	"fmt"

	"github.com/trellis-mesh/trellis/node-proxy/config"
)

// File serves the config in Path. The first load must succeed; after that
// a bad file is reported through apply's caller and the proxy keeps its
// current config.
type File struct {
	Path string
	// Reload triggers a re-read (nil: never).
	Reload <-chan struct{}
	// OnError is told about reload failures (nil: ignored).
	OnError func(error)
	// Prepare, when set, completes each loaded config before it is
	// validated (see config.DecodeBytesWith).
	Prepare func(*config.Config) error
}

// Run loads the file, hands it to apply, and repeats on Reload until ctx ends.
func (f *File) Run(ctx context.Context, apply func(context.Context, *config.Config) error) error {
	c, err := config.LoadFileWith(f.Path, f.Prepare)
	if err != nil {
		return err
	}
	if err := apply(ctx, c); err != nil {
		return fmt.Errorf("config file %s: %w", f.Path, err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-f.Reload:
			c, err := config.LoadFileWith(f.Path, f.Prepare)
			if err == nil {
				err = apply(ctx, c)
			}
			if err != nil && f.OnError != nil {
				f.OnError(err)
			}
		}
	}
}
