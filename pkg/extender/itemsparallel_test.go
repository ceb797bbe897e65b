package extender

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// decodedChunked is what a decode returns, for comparing a chunked scan with the one-pass
// scan of the same bytes.
type decodedChunked struct {
	err    string
	items  []string
	names  []string
	missed []string
	nodes  string
	merged bool
}

func decodeWith(b []byte, known nameSet, chunks, minBytes int) decodedChunked {
	var a args
	err := decodeArgsChunked(b, &a, known, nil, chunks, minBytes)
	var d decodedChunked
	if err != nil {
		d.err = err.Error()
		return d
	}
	if a.list != nil {
		for _, it := range a.list.Items {
			d.items = append(d.items, string(it))
		}
		d.names, d.merged = a.list.names, a.list.merged
	}
	d.missed, d.nodes = a.missedNames, string(a.Nodes)
	return d
}

// sameChunked fails t unless scanning b's items array in 2 to 5 chunks (cut however small
// the body) decodes exactly what the one-pass scan does: the same items, names, unknown
// names and errors, word for word.
func sameChunked(t testing.TB, b []byte, known nameSet) {
	t.Helper()
	want := decodeWith(b, known, 1, 0)
	for chunks := 2; chunks <= 5; chunks++ {
		got := decodeWith(b, known, chunks, 0)
		if !assert.Equal(t, want, got, "%d chunks", chunks) {
			t.FailNow()
		}
	}
}

// itemsDoc is a full-Node ExtenderArgs body of n items, each made by item(i).
func itemsDoc(n int, item func(i int) string) []byte {
	items := make([]string, n)
	for i := range items {
		items[i] = item(i)
	}
	return []byte(`{"Pod":` + podWithClaim + `,"Nodes":{"metadata":{},"items":[` + strings.Join(items, ",") + `]},"NodeNames":null}`)
}

func plainItem(i int) string {
	return fmt.Sprintf(`{"metadata":{"name":"node-%d","labels":{"zone":"z%d"}},"status":{"conditions":[{"type":"Ready","status":"True"},{"type":"DiskPressure","status":"False"}]}}`, i, i%3)
}

// TestItemsInChunksAgree: the chunked scan of Nodes.items means what the one-pass scan
// means, for the bodies kube-scheduler sends and for the ones that defeat the guessed
// cuts: boundary text inside an item, an error or a null item in a later chunk, a cut
// past the end of the array, no boundary at all, a truncated body, unknown names.
func TestItemsInChunksAgree(t *testing.T) {
	known := nameSet{}
	for i := range 40 {
		if i%3 != 0 {
			n := fmt.Sprintf("node-%d", i)
			known[n] = knownName{name: n}
		}
	}
	corrupt := func(b []byte, at int, with string) []byte {
		out := append([]byte{}, b[:at]...)
		return append(append(out, with...), b[at+len(with):]...)
	}
	base := itemsDoc(40, plainItem)
	lastName := strings.LastIndex(string(base), `"node-39"`)
	cases := map[string][]byte{
		"as kube-scheduler sends": base,
		"one item":                itemsDoc(1, plainItem),
		"two items":               itemsDoc(2, plainItem),
		// Arrays of objects with a metadata key inside each item: every guessed cut may
		// land inside an item, where the chunk before it must overrule it.
		"boundary text inside items": itemsDoc(40, func(i int) string {
			return fmt.Sprintf(`{"metadata":{"name":"node-%d"},"x":[{"metadata":1},{"metadata":{"name":"inner-%d"}},{"metadata":[]}]}`, i, i)
		}),
		"boundary text after the array": []byte(strings.Replace(string(base), `,"NodeNames":null}`, `,"Extra":[{},{"metadata":{"name":"x"}},{"metadata":2}],"NodeNames":null}`, 1)),
		"an error in the last item":     corrupt(base, lastName+1, "node-39\x01"),
		"a bad item at the end":         []byte(strings.Replace(string(base), `]},"NodeNames"`, `,{"metadata":{"name":5}}]},"NodeNames"`, 1)),
		"an item that is not an object": []byte(strings.Replace(string(base), `]},"NodeNames"`, `,7]},"NodeNames"`, 1)),
		"a null item late":              []byte(strings.Replace(string(base), `]},"NodeNames"`, `,null]},"NodeNames"`, 1)),
		"a missing comma late":          corrupt(base, strings.LastIndex(string(base), `},{"metadata":`)+1, " "),
		"truncated":                     base[:len(base)*3/4],
		"truncated after a comma":       base[:strings.LastIndex(string(base), `},{"metadata":`)+2],
		"no boundary (whitespace)":      []byte(strings.ReplaceAll(string(base), `},{"metadata":`, `}, {"metadata":`)),
		"nested too deeply late": []byte(strings.Replace(string(base), `]},"NodeNames"`,
			`,{"metadata":{"name":"deep"},"x":`+strings.Repeat("[", maxDepth)+strings.Repeat("]", maxDepth)+`}]},"NodeNames"`, 1)),
		"empty array": itemsDoc(0, plainItem),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			sameChunked(t, b, known)
			sameChunked(t, b, nil)
		})
	}
}

// TestItemsInChunksTakesItsPath: on the body kube-scheduler sends the items are cut (the
// test above would pass as well if they never were), the chunks link, and a body whose cuts
// all land inside items is still scanned in chunks, the first one carrying on past them.
func TestItemsInChunksTakesItsPath(t *testing.T) {
	scan := func(b []byte) (*jsonScanner, *rawNodeList, bool) {
		at := strings.Index(string(b), `"items":[`) + len(`"items":`)
		p := &jsonScanner{b: b, i: at, depth: 2, chunks: 3}
		l := &rawNodeList{}
		return p, l, p.itemsInChunks(l)
	}
	b := itemsDoc(30, plainItem)
	p, l, ok := scan(b)
	require.True(t, ok)
	require.Len(t, l.names, 30)
	assert.Equal(t, "node-0", l.names[0])
	assert.Equal(t, "node-29", l.names[29])
	assert.Equal(t, `]},"NodeNames":null}`, string(b[p.i-1:]), "p.i is past the array")
	assert.Equal(t, 3, l.chunks)

	inner := itemsDoc(30, func(i int) string {
		return fmt.Sprintf(`{"metadata":{"name":"node-%d"},"x":[{"metadata":1},{"metadata":2},{"metadata":3},{"metadata":4}]}`, i)
	})
	_, l, ok = scan(inner)
	require.True(t, ok)
	assert.Len(t, l.names, 30)

	bad := []byte(strings.Replace(string(b), `"node-29"`, `"node-29\x01"`, 1))
	p, _, ok = scan(bad)
	assert.False(t, ok, "an error is left to the one-pass scan, which reports it with the item's index")
	assert.Equal(t, strings.Index(string(bad), `"items":[`)+len(`"items":`), p.i, "p untouched")
}

// FuzzItemsInChunks: for any body, a chunked scan decodes what the one-pass scan does.
func FuzzItemsInChunks(f *testing.F) {
	f.Add(itemsDoc(6, plainItem))
	f.Add(itemsDoc(4, func(i int) string {
		return fmt.Sprintf(`{"metadata":{"name":"n%d"},"x":[{"metadata":1},{"metadata":{"name":"y"}}]}`, i)
	}))
	for _, s := range equivSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sameChunked(t, b, nameSet{"n1": {name: "n1"}, "node-2": {name: "node-2"}})
	})
}

// TestSchedulerBodyIsChunked: a body as kube-scheduler encodes it (encoding/json of
// ExtenderArgs with v1.Node items, as HTTPExtender.send does) of more than
// parallelItemsMinBytes is scanned in chunks on a machine with more than one CPU, and the
// answer is the one-pass scan's.
func TestSchedulerBodyIsChunked(t *testing.T) {
	_, pod, names := benchState(t, 600)
	nodes := &corev1.NodeList{}
	for _, n := range names {
		var node corev1.Node
		require.NoError(t, json.Unmarshal(kwokNode(n), &node))
		nodes.Items = append(nodes.Items, node)
	}
	body := mustJSON(t, extenderv1.ExtenderArgs{Pod: pod, Nodes: nodes})
	require.Greater(t, len(body), parallelItemsMinBytes)
	var a args
	require.NoError(t, decodeArgsChunked(body, &a, nil, nil, 2, parallelItemsMinBytes))
	assert.Equal(t, 2, a.list.chunks, "cut at the boundary encoding/json writes between two Nodes")
	assert.Equal(t, names, a.list.names)
	sameChunked(t, body, nil)
}
