package extender

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// stdlibArgs is the encoding/json alternative to the hand-written reader: the same
// ExtenderArgs with the NodeList's items kept raw (json.RawMessage), so they can be
// returned verbatim, and NodeNames decoded to strings.
type stdlibArgs struct {
	Pod   *corev1.Pod
	Nodes *struct {
		Kind       string          `json:"kind"`
		APIVersion string          `json:"apiVersion"`
		Metadata   json.RawMessage `json:"metadata"`
		Items      []json.RawMessage
	}
	NodeNames *[]string
}

// itemName is what the extender needs of each raw item.
type itemName struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

// decodeStdlib decodes body with encoding/json into what the handler needs: the Pod, the
// names (given, or read from each raw item) and the raw items.
func decodeStdlib(body []byte) (*stdlibArgs, []string, error) {
	var a stdlibArgs
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, nil, err
	}
	if a.NodeNames != nil {
		return &a, *a.NodeNames, nil
	}
	if a.Nodes == nil {
		return &a, nil, nil
	}
	names := make([]string, len(a.Nodes.Items))
	for i, it := range a.Nodes.Items {
		var n itemName
		if err := json.Unmarshal(it, &n); err != nil {
			return nil, nil, fmt.Errorf("item %d: %w", i, err)
		}
		names[i] = n.Metadata.Name
	}
	return &a, names, nil
}

// decodeHandWritten is the handler's path: decodeArgs, then the names a decision needs.
func decodeHandWritten(body []byte) (*args, []string, error) {
	var a args
	if err := decodeArgs(body, &a); err != nil {
		return nil, nil, err
	}
	if a.NodeNames != nil {
		return &a, *a.NodeNames, nil
	}
	if a.list != nil {
		return &a, a.list.names, nil
	}
	return &a, nil, nil
}

// decodeShapes are the request bodies kube-scheduler sends: nodeCacheCapable (names only)
// and full Node objects, each with 500 and 5,000 nodes, and a pod with three claims.
func decodeShapes(b *testing.B) []struct {
	name  string
	body  []byte
	nodes int
} {
	_, pod, names := benchState(b, 5000)
	podJSON := string(mustMarshal(b, pod))
	type shape = struct {
		name  string
		body  []byte
		nodes int
	}
	var out []shape
	for _, n := range []int{500, 5000} {
		nn := names[:n]
		out = append(out, shape{fmt.Sprintf("names%d", n), mustMarshal(b, extenderv1.ExtenderArgs{Pod: pod, NodeNames: &nn}), n})
	}
	for _, n := range []int{500, 5000} {
		items := make([]string, n)
		for i := range items {
			items[i] = string(kwokNode(names[i]))
		}
		body := []byte(`{"Pod":` + podJSON + `,"Nodes":{"metadata":{},"items":[` + strings.Join(items, ",") + `]},"NodeNames":null}`)
		out = append(out, shape{fmt.Sprintf("fullNodes%d", n), body, n})
	}
	return out
}

// BenchmarkDecodeArgs measures, in one run on the same bytes, the hand-written reader and
// encoding/json decoding into raw items (stdlibArgs), each up to the names a decision
// needs. The "-stdlib" line is the baseline the hand-written reader must beat to stay.
func BenchmarkDecodeArgs(b *testing.B) {
	for _, tc := range decodeShapes(b) {
		// Both readers must see the same nodes, or the comparison means nothing.
		_, hw, err := decodeHandWritten(tc.body)
		if err != nil {
			b.Fatal(err)
		}
		_, std, err := decodeStdlib(tc.body)
		if err != nil {
			b.Fatal(err)
		}
		if len(hw) != tc.nodes || strings.Join(hw, ",") != strings.Join(std, ",") {
			b.Fatalf("%s: the readers disagree on the names", tc.name)
		}
		b.Run(tc.name+"-handwritten", func(b *testing.B) {
			b.SetBytes(int64(len(tc.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := decodeHandWritten(tc.body); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"-stdlib", func(b *testing.B) {
			b.SetBytes(int64(len(tc.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := decodeStdlib(tc.body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
