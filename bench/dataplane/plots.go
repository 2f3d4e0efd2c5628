package main

import (
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// writePlots draws the throughput bars, the latency percentiles at the
// reference rate and p99 against rate, as PNGs in dir.
func writePlots(dir string, r *Results, sum map[string]*summary) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var out []string

	// Throughput.
	{
		p := plot.New()
		p.Title.Text = "Max throughput, closed loop (median)"
		p.Y.Label.Text = "requests per second"
		var vals plotter.Values
		var names []string
		for _, name := range r.Targets {
			v := sum[name].maxRPS
			if math.IsNaN(v) {
				v = 0
			}
			vals = append(vals, v)
			names = append(names, name)
		}
		bars, err := plotter.NewBarChart(vals, vg.Points(28))
		if err != nil {
			return nil, err
		}
		bars.Color = color.RGBA{R: 60, G: 110, B: 180, A: 255}
		bars.LineStyle.Width = 0
		p.Add(bars)
		p.NominalX(names...)
		labels, err := barLabels(vals)
		if err == nil {
			p.Add(labels)
		}
		p.Y.Min = 0
		path := filepath.Join(dir, "throughput.png")
		if err := p.Save(8*vg.Inch, 4*vg.Inch, path); err != nil {
			return nil, err
		}
		out = append(out, path)
	}

	ref := refRate(r)
	logY := func(p *plot.Plot) {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	}

	// Percentiles at the reference rate.
	if ref != "" {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("Latency percentiles at %s req/s, open loop (median of repeats)", ref)
		p.Y.Label.Text = "milliseconds (log)"
		p.X.Label.Text = "percentile"
		logY(p)
		qs := []string{"p50", "p90", "p99", "p99.9", "max"}
		p.NominalX(qs...)
		var lines []any
		for _, name := range r.Targets {
			o, ok := sum[name].open[ref]
			if !ok {
				continue
			}
			vals := []float64{o.p50, o.p90, o.p99, o.p999, o.max}
			pts := make(plotter.XYs, 0, len(vals))
			for i, v := range vals {
				if v > 0 && !math.IsNaN(v) {
					pts = append(pts, plotter.XY{X: float64(i), Y: v * 1000})
				}
			}
			lines = append(lines, name, pts)
		}
		if err := plotutil.AddLinePoints(p, lines...); err != nil {
			return nil, err
		}
		p.Legend.Top = true
		p.Legend.Left = true
		path := filepath.Join(dir, "latency-"+ref+".png")
		if err := p.Save(8*vg.Inch, 5*vg.Inch, path); err != nil {
			return nil, err
		}
		out = append(out, path)
	}

	// p99 against rate.
	if rates := sortedRates(r); len(rates) > 1 {
		p := plot.New()
		p.Title.Text = "p99 latency against request rate, open loop (median of repeats)"
		p.Y.Label.Text = "p99, milliseconds (log)"
		p.X.Label.Text = "requests per second"
		logY(p)
		var lines []any
		for _, name := range r.Targets {
			var pts plotter.XYs
			for _, rate := range rates {
				o, ok := sum[name].open[rate]
				if !ok || o.p99 <= 0 || math.IsNaN(o.p99) {
					continue
				}
				var x float64
				_, _ = fmt.Sscan(rate, &x)
				pts = append(pts, plotter.XY{X: x, Y: o.p99 * 1000})
			}
			lines = append(lines, name, pts)
		}
		if err := plotutil.AddLinePoints(p, lines...); err != nil {
			return nil, err
		}
		p.Legend.Top = true
		p.Legend.Left = true
		path := filepath.Join(dir, "p99-by-rate.png")
		if err := p.Save(8*vg.Inch, 5*vg.Inch, path); err != nil {
			return nil, err
		}
		out = append(out, path)
	}
	return out, nil
}

func barLabels(vals plotter.Values) (*plotter.Labels, error) {
	xys := make(plotter.XYs, len(vals))
	txt := make([]string, len(vals))
	for i, v := range vals {
		xys[i] = plotter.XY{X: float64(i), Y: v}
		txt[i] = fmt.Sprintf("%.0f", v)
	}
	l, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: txt})
	if err != nil {
		return nil, err
	}
	for i := range l.TextStyle {
		l.TextStyle[i].XAlign = -0.5
	}
	return l, nil
}
