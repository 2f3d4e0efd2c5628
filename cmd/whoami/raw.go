package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
)

// runRaw sends what stdin holds to addr over one TCP connection and prints
// every byte the server answers, then whether the server closed the
// connection and when (the e2e attack suite uses it for request smuggling,
// oversized headers and slowloris). With slow, the payload goes out one
// byte a second, as a slowloris client sends its headers.
func runRaw(addr string, wait time.Duration, slow bool, out io.Writer) error {
	payload, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	deadline := start.Add(wait)
	_ = c.SetDeadline(deadline)
	closed := make(chan time.Duration, 1)
	go func() {
		_, _ = io.Copy(out, c)
		closed <- time.Since(start)
	}()
	if slow {
		for _, b := range payload {
			if _, err := c.Write([]byte{b}); err != nil {
				break // the server gave up on us: reported below
			}
			select {
			case d := <-closed:
				fmt.Fprintf(out, "\nCLOSED after %.1fs\n", d.Seconds())
				return nil
			case <-time.After(time.Second):
			}
		}
	} else if _, err := c.Write(payload); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	select {
	case d := <-closed:
		if time.Now().Before(deadline) {
			fmt.Fprintf(out, "\nCLOSED after %.1fs\n", d.Seconds())
			return nil
		}
	case <-time.After(time.Until(deadline) + time.Second):
	}
	fmt.Fprintf(out, "\nOPEN after %.1fs\n", wait.Seconds())
	return nil
}
