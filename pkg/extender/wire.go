package extender

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"

	"github.com/petfabric/petfabric/pkg/placement"
)

// The wire types mirror k8s.io/kube-scheduler/extender/v1 (whose structs carry no JSON tags,
// so the field names are the JSON keys) with one difference: Node objects stay raw JSON.
// kube-scheduler v1.36 rebuilds its NodeInfo from the Nodes an extender returns in
// full-Node mode (k8s.io/kubernetes/pkg/scheduler/extender.go, HTTPExtender.Filter: NodeInfo.SetNode on each
// returned item), so every passing Node must come back exactly as it was sent. Decoding
// into corev1.Node and encoding again would drop fields this build does not know and
// re-format quantities; keeping the bytes cannot. handler_test.go and the differential
// fuzzer in argsreader_equiv_test.go check both directions against the upstream types.

// args is extenderv1.ExtenderArgs with Nodes kept raw.
type args struct {
	Pod       *corev1.Pod
	Nodes     json.RawMessage // *v1.NodeList, or null
	NodeNames *[]string
	// list is Nodes split into items, with their names (set when Nodes is given).
	list *rawNodeList
	// namesPlain: every name in NodeNames needs no escaping (appendPlain writes it).
	namesPlain bool
	// missedNames are the plain node names the reader did not find among the known names.
	missedNames []string
	// refs are the NodeRefs of NodeNames (placement.FilterRefs), when the reader was
	// given the known names.
	refs []placement.NodeRef
	// scratch is the pooled room the handler offered the reader for NodeNames; pass is
	// the pooled Decision.Pass of a filter request.
	scratch *nameScratch
	pass    []int
}

func (a *args) hasNodes() bool { return len(a.Nodes) > 0 && !bytes.Equal(a.Nodes, []byte("null")) }

// rawNodeList is a v1.NodeList whose items are undecoded.
type rawNodeList struct {
	Kind       string          `json:"kind,omitempty"`
	APIVersion string          `json:"apiVersion,omitempty"`
	Metadata   json.RawMessage `json:"metadata,omitempty"`
	Items      []json.RawMessage
	names      []string
	// merged: the document repeats a key of the list or has a null item, so its meaning
	// follows encoding/json's merge rules (decodeArgsMerged).
	merged bool
	// chunks is how many chunks the items were scanned in (itemsInChunks), 0 for one pass.
	chunks int
}

// filterResult is extenderv1.ExtenderFilterResult with raw Nodes. It is written by hand
// (appendFilterResult) so that raw nodes are copied, not re-validated by encoding/json.
type filterResult struct {
	// nodesRaw is the complete NodeList to return verbatim (fast path), or nil.
	nodesRaw json.RawMessage
	// list and pass select the items of a parsed NodeList to return.
	list *rawNodeList
	pass []int
	// hasNames: names-only mode; the answer's NodeNames are names, or with namesPass set
	// the names at the indices in pass (no copy of the passing names is made).
	hasNames, namesPass bool
	names               []string
	// namesPlain: no name needs escaping (args.namesPlain), so each is copied as it is.
	namesPlain bool

	failed, unresolvable map[string]string
	err                  string
}

func appendFilterResult(b []byte, r *filterResult) []byte {
	b = append(b, `{"Nodes":`...)
	switch {
	case r.nodesRaw != nil:
		b = append(b, r.nodesRaw...)
	case r.list != nil:
		b = appendNodeList(b, r.list, r.pass)
	default:
		b = append(b, "null"...)
	}
	b = append(b, `,"NodeNames":`...)
	switch {
	case r.hasNames && r.namesPass:
		b = append(b, '[')
		for i, idx := range r.pass {
			if i > 0 {
				b = append(b, ',')
			}
			if r.namesPlain {
				b = appendPlain(b, r.names[idx])
			} else {
				b = appendString(b, r.names[idx])
			}
		}
		b = append(b, ']')
	case r.hasNames:
		b = appendStrings(b, r.names, r.namesPlain)
	default:
		b = append(b, "null"...)
	}
	b = append(b, `,"FailedNodes":`...)
	b = appendMap(b, r.failed)
	b = append(b, `,"FailedAndUnresolvableNodes":`...)
	b = appendMap(b, r.unresolvable)
	b = append(b, `,"Error":`...)
	b = appendString(b, r.err)
	return append(b, '}')
}

func appendNodeList(b []byte, l *rawNodeList, pass []int) []byte {
	b = append(b, '{')
	if l.Kind != "" {
		b = append(b, `"kind":`...)
		b = appendString(b, l.Kind)
		b = append(b, ',')
	}
	if l.APIVersion != "" {
		b = append(b, `"apiVersion":`...)
		b = appendString(b, l.APIVersion)
		b = append(b, ',')
	}
	if len(l.Metadata) > 0 {
		b = append(b, `"metadata":`...)
		b = append(b, l.Metadata...)
		b = append(b, ',')
	}
	b = append(b, `"items":[`...)
	for i, idx := range pass {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, l.Items[idx]...)
	}
	return append(b, "]}"...)
}

func appendMap(b []byte, m map[string]string) []byte {
	if m == nil {
		return append(b, "null"...)
	}
	// encoding/json sorts map keys; so do we, to keep answers deterministic.
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	// The values are a few messages repeated for many nodes; one that needs escaping is
	// encoded once and then copied from where it was first written.
	var seen [8]struct {
		msg        string
		start, end int
	}
	n := 0
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		v := m[k]
		j := 0
		for j < n && seen[j].msg != v {
			j++
		}
		if j < n {
			b = append(b, b[seen[j].start:seen[j].end]...)
			continue
		}
		start := len(b)
		b = appendString(b, v)
		if n < len(seen) {
			seen[n].msg, seen[n].start, seen[n].end = v, start, len(b)
			n++
		}
	}
	return append(b, '}')
}

// appendString writes s as a JSON string. Node names (DNS subdomains) never need escaping,
// so the common case is a plain copy; anything else goes through encoding/json, which also
// escapes <, > and & the way the scheduler's own encoder would.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if !jsonPlain[s[i]] {
			enc, err := json.Marshal(s)
			if err != nil {
				// Marshal of a string cannot fail; keep a valid document regardless.
				return strconv.AppendQuote(b, s)
			}
			return append(b, enc...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendPlain writes s, known to hold only jsonPlain bytes, as a JSON string: what
// appendString writes for it, without looking at the bytes again.
func appendPlain(b []byte, s string) []byte {
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// jsonPlain marks the bytes appendString copies as they are: printable ASCII other than
// '"', '\\', '<', '>' and '&' (a table lookup per byte instead of seven comparisons).
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendStrings writes names as a JSON array of strings; plain says none needs escaping.
func appendStrings(b []byte, names []string, plain bool) []byte {
	b = append(b, '[')
	for i, n := range names {
		if i > 0 {
			b = append(b, ',')
		}
		if plain {
			b = appendPlain(b, n)
		} else {
			b = appendString(b, n)
		}
	}
	return append(b, ']')
}

// appendPriorities writes an extenderv1.HostPriorityList; plain says no host name needs
// escaping.
func appendPriorities(b []byte, hosts []string, scores []int64, plain bool) []byte {
	b = append(b, '[')
	for i, h := range hosts {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"Host":`...)
		if plain {
			b = appendPlain(b, h)
		} else {
			b = appendString(b, h)
		}
		b = append(b, `,"Score":`...)
		b = strconv.AppendInt(b, scores[i], 10)
		b = append(b, '}')
	}
	return append(b, ']')
}

var errNoPod = errors.New("ExtenderArgs has no Pod")
