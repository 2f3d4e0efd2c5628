package serve

import (
	"bytes"
	"encoding/json"
	"io"

	"github.com/trellis-mesh/trellis/controller/compile"
)

// The stream protocol, version 1.
//
// A proxy opens GET /v1/stream with `Authorization: Bearer <ServiceAccount
// token>` and, when it already holds a config, `X-Trellis-Have: <version>`.
// The response (HTTP/2, Content-Type application/x-ndjson) is a sequence of
// frames, one JSON object per line:
//
//	{"type":"snapshot","version":V,"config":{...}}        the whole config
//	{"type":"delta","base":B,"version":V,"upsert":[...],"remove":[...],
//	 "header":{...},"localPods":[...]}                       changes from B
//	{"type":"current","version":V}                          you already have V
//	{"type":"ping"}                                         keep-alive
//
// The first frame is a snapshot, or "current" when X-Trellis-Have is the
// current version. A delta is only sent on top of a version the stream
// itself delivered; header and localPods appear only when they changed.
// The client applies the delta to its copy of B and must get a config whose
// Hash() is V; otherwise it reconnects without X-Trellis-Have and gets a
// snapshot. Frames are sent whenever the node's version changes; versions
// in between may be skipped.
const (
	StreamPath  = "/v1/stream"
	AckPath     = "/v1/ack"
	HaveHeader  = "X-Trellis-Have"
	ContentType = "application/x-ndjson"
)

// Frame types.
const (
	FrameSnapshot = "snapshot"
	FrameDelta    = "delta"
	FrameCurrent  = "current"
	FramePing     = "ping"
)

// Ack is what a proxy reports after handling a version.
type Ack struct {
	Version string `json:"version"`
	Applied bool   `json:"applied"`
	Error   string `json:"error,omitempty"`
	// Plugins are the plugins of an applied version that the proxy could
	// not load (they compile on the proxy), for Events on their objects.
	Plugins []PluginError `json:"plugins,omitempty"`
}

// PluginError is one plugin a proxy could not load.
type PluginError struct {
	Name  string `json:"name"` // config.Plugin.Name: "namespace/name" of the MeshPlugin
	Error string `json:"error"`
}

func writeSnapshot(w io.Writer, n *compile.Node) error {
	if _, err := io.WriteString(w, `{"type":"snapshot","version":"`+n.Version+`","config":`); err != nil {
		return err
	}
	if _, err := n.WriteTo(w); err != nil {
		return err
	}
	_, err := io.WriteString(w, "}\n")
	return err
}

// delta writes a delta frame from prev to cur when it is smaller than half
// a snapshot; ok=false means "send a snapshot instead".
func delta(prev, cur *compile.Node) (frame []byte, ok bool) {
	var upsert []*compile.Fragment
	var remove []string
	size := 0
	i, j := 0, 0
	for i < len(prev.Services) || j < len(cur.Services) {
		switch {
		case j >= len(cur.Services) || (i < len(prev.Services) && prev.Services[i].Key < cur.Services[j].Key):
			remove = append(remove, prev.Services[i].Key)
			i++
		case i >= len(prev.Services) || cur.Services[j].Key < prev.Services[i].Key:
			upsert = append(upsert, cur.Services[j])
			size += len(cur.Services[j].JSON)
			j++
		default:
			if prev.Services[i] != cur.Services[j] && !bytes.Equal(prev.Services[i].JSON, cur.Services[j].JSON) {
				upsert = append(upsert, cur.Services[j])
				size += len(cur.Services[j].JSON)
			}
			i++
			j++
		}
	}
	full := len(cur.HeaderJSON()) + len(cur.LocalPodsJSON())
	for _, f := range cur.Services {
		full += len(f.JSON) + 1
	}
	if size*2 > full {
		return nil, false
	}
	var b bytes.Buffer
	b.WriteString(`{"type":"delta","base":"` + prev.Version + `","version":"` + cur.Version + `"`)
	if !bytes.Equal(prev.HeaderJSON(), cur.HeaderJSON()) {
		b.WriteString(`,"header":`)
		b.Write(cur.HeaderJSON())
	}
	if !bytes.Equal(prev.LocalPodsJSON(), cur.LocalPodsJSON()) {
		b.WriteString(`,"localPods":`)
		if lp := cur.LocalPodsJSON(); lp != nil {
			b.Write(lp)
		} else {
			b.WriteString("[]")
		}
	}
	if len(upsert) > 0 {
		b.WriteString(`,"upsert":[`)
		for k, f := range upsert {
			if k > 0 {
				b.WriteByte(',')
			}
			b.Write(f.JSON)
		}
		b.WriteByte(']')
	}
	if len(remove) > 0 {
		rb, _ := json.Marshal(remove)
		b.WriteString(`,"remove":`)
		b.Write(rb)
	}
	b.WriteString("}\n")
	return b.Bytes(), true
}
