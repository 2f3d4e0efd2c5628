package symbols

import (
	"io"
	"log"
)

// The extractor refers to these for package log (as yaegi's stdlib does):
// a plugin's log.Fatal* and Logger.Fatal* panic instead of ending the
// proxy. (node-proxy/plugin replaces the package-level functions again, per
// interpreter, to write to the plugin's own log.)

func logFatal(v ...any)                 { log.Panic(v...) }
func logFatalf(format string, v ...any) { log.Panicf(format, v...) }
func logFatalln(v ...any)               { log.Panicln(v...) }

// logLogger is what log.Logger is to a plugin: a *log.Logger whose Fatal
// methods panic. The other methods pass through.
type logLogger struct{ l *log.Logger }

func logNew(out io.Writer, prefix string, flag int) *logLogger {
	return &logLogger{l: log.New(out, prefix, flag)}
}

func (w *logLogger) Fatal(v ...any)                 { w.l.Panic(v...) }
func (w *logLogger) Fatalf(format string, v ...any) { w.l.Panicf(format, v...) }
func (w *logLogger) Fatalln(v ...any)               { w.l.Panicln(v...) }
func (w *logLogger) Flags() int                     { return w.l.Flags() }
func (w *logLogger) Output(depth int, s string) error {
	return w.l.Output(depth, s)
}
func (w *logLogger) Panic(v ...any)                 { w.l.Panic(v...) }
func (w *logLogger) Panicf(format string, v ...any) { w.l.Panicf(format, v...) }
func (w *logLogger) Panicln(v ...any)               { w.l.Panicln(v...) }
func (w *logLogger) Prefix() string                 { return w.l.Prefix() }
func (w *logLogger) Print(v ...any)                 { w.l.Print(v...) }
func (w *logLogger) Printf(format string, v ...any) { w.l.Printf(format, v...) }
func (w *logLogger) Println(v ...any)               { w.l.Println(v...) }
func (w *logLogger) SetFlags(flag int)              { w.l.SetFlags(flag) }
func (w *logLogger) SetOutput(out io.Writer)        { w.l.SetOutput(out) }
func (w *logLogger) SetPrefix(prefix string)        { w.l.SetPrefix(prefix) }
func (w *logLogger) Writer() io.Writer              { return w.l.Writer() }
