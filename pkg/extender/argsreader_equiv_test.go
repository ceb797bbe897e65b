package extender

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// The decoded value of an ExtenderArgs body must be what encoding/json makes of it: that
// is how kube-scheduler, and any proxy in between, reads the same bytes. Two references:
//
//   - strict: encoding/json into the upstream extenderv1.ExtenderArgs;
//   - loose: the same, except that of each Nodes item only metadata.name is decoded (with
//     the same merge rules, since ObjectMeta is a struct and name a string), and of the
//     Pod only slimPod's fields (podreader.go). decodeArgs type-checks nothing else inside
//     an item or the Pod, by design (argsreader.go).
//
// Both add what decodeArgs requires beyond encoding/json: every Nodes item has a name.

type looseArgs struct {
	Pod       *slimPod
	Nodes     *looseNodeList
	NodeNames *[]string
}

type looseNodeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []looseNode `json:"items"`
}

type looseNode struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

func strictReference(b []byte) (*extenderv1.ExtenderArgs, error) {
	var ref extenderv1.ExtenderArgs
	if err := json.Unmarshal(b, &ref); err != nil {
		return nil, err
	}
	if ref.Nodes != nil {
		for i, n := range ref.Nodes.Items {
			if n.Name == "" {
				return nil, fmt.Errorf("item %d has no name", i)
			}
		}
	}
	return &ref, nil
}

func looseReference(b []byte) (*looseArgs, error) {
	var ref looseArgs
	if err := json.Unmarshal(b, &ref); err != nil {
		return nil, err
	}
	if ref.Nodes != nil {
		for i, n := range ref.Nodes.Items {
			if n.Metadata.Name == "" {
				return nil, fmt.Errorf("item %d has no name", i)
			}
		}
	}
	return &ref, nil
}

// decodedValue is what decodeArgs's result means, in the upstream types: the Pod, the
// names, and the NodeList with each raw item decoded.
func decodedValue(a *args) (*extenderv1.ExtenderArgs, error) {
	out := &extenderv1.ExtenderArgs{Pod: a.Pod, NodeNames: a.NodeNames}
	if a.hasNodes() {
		l := &corev1.NodeList{}
		l.Kind, l.APIVersion = a.list.Kind, a.list.APIVersion
		if len(a.list.Metadata) > 0 {
			if err := json.Unmarshal(a.list.Metadata, &l.ListMeta); err != nil {
				return nil, fmt.Errorf("metadata: %w", err)
			}
		}
		l.Items = make([]corev1.Node, len(a.list.Items))
		for i, it := range a.list.Items {
			if err := json.Unmarshal(it, &l.Items[i]); err != nil {
				return nil, fmt.Errorf("item %d: %w", i, err)
			}
		}
		out.Nodes = l
	}
	return out, nil
}

// sameAsEncodingJSON fails t unless decodeArgs and encoding/json agree on b.
func sameAsEncodingJSON(t testing.TB, b []byte) {
	t.Helper()
	var a args
	err := decodeArgs(b, &a)
	loose, looseErr := looseReference(b)
	if (err == nil) != (looseErr == nil) {
		t.Fatalf("decodeArgs error %v, encoding/json error %v, for %q", err, looseErr, b)
	}
	if err != nil {
		return
	}
	// The names decisions are made on.
	if loose.Nodes != nil {
		require.NotNil(t, a.list, "Nodes lost for %q", b)
		require.Len(t, a.list.names, len(loose.Nodes.Items), "item count for %q", b)
		for i, n := range loose.Nodes.Items {
			if a.list.names[i] != n.Metadata.Name {
				t.Fatalf("item %d: decodeArgs reads name %q, encoding/json %q, for %q", i, a.list.names[i], n.Metadata.Name, b)
			}
		}
	} else if a.hasNodes() {
		t.Fatalf("decodeArgs found Nodes where encoding/json found none in %q", b)
	}
	sameInterned(t, b, &a)
	strict, strictErr := strictReference(b)
	if strictErr != nil {
		return // an item's other content is wrong: not checked by design
	}
	got, err := decodedValue(&a)
	if err != nil {
		t.Fatalf("encoding/json decodes %q but decodeArgs's result does not: %v", b, err)
	}
	if strict.Pod != nil {
		// What the extender reads of the Pod (and all it decodes).
		slim := &corev1.Pod{}
		slim.Name, slim.Namespace, slim.Spec.Volumes = strict.Pod.Name, strict.Pod.Namespace, strict.Pod.Spec.Volumes
		strict.Pod = slim
	}
	if !apiequality.Semantic.DeepEqual(got, strict) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(strict)
		t.Fatalf("decoded values differ for %q\n decodeArgs:    %s\n encoding/json: %s", b, g, w)
	}
}

const (
	podWithClaim = `{"metadata":{"name":"db-0","namespace":"shop"},"spec":{"volumes":[{"name":"data","persistentVolumeClaim":{"claimName":"data-db-0"}}]}}`
	nodeA        = `{"metadata":{"name":"a"}}`
	nodeB        = `{"metadata":{"name":"b"}}`
)

// equivSeeds are documents whose meaning depends on encoding/json's rules for repeated
// keys, case-folded keys, null and reused elements, plus the ordinary shapes.
var equivSeeds = []string{
	// What kube-scheduler sends.
	`{"Pod":` + podWithClaim + `,"Nodes":null,"NodeNames":["a","b"]}`,
	`{"Pod":` + podWithClaim + `,"Nodes":{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"9"},"items":[` + nodeA + `,` + nodeB + `]},"NodeNames":null}`,
	// Two NodeNames: the last wins.
	`{"Pod":` + podWithClaim + `,"NodeNames":["evil"],"NodeNames":["a","b"]}`,
	// Two items arrays: encoding/json decodes the second over the first, element by element
	// (the old reader concatenated them: x, a, b).
	`{"Pod":` + podWithClaim + `,"Nodes":{"items":[{"metadata":{"name":"x"}}],"items":[` + nodeA + `,` + nodeB + `]}}`,
	// A second Pod merges into the first: its volumes stay (the old reader kept only the
	// last Pod, saw no volume and let the pod go anywhere).
	`{"Pod":` + podWithClaim + `,"Pod":{"metadata":{"name":"db-0"}},"NodeNames":["a"]}`,
	`{"pod":` + podWithClaim + `,"POD":{"metadata":{"labels":{"x":"y"}}},"nodenames":["a"]}`,
	`{"Pod":` + podWithClaim + `,"Pod":null,"NodeNames":["a"]}`,
	// A null name keeps the element it lands on.
	`{"Pod":` + podWithClaim + `,"NodeNames":["a","b"],"NodeNames":["c",null]}`,
	`{"Pod":` + podWithClaim + `,"NodeNames":["a",null]}`,
	// Reused Node elements merge: b inherits a's spec.
	`{"Pod":` + podWithClaim + `,"Nodes":{"items":[{"metadata":{"name":"a"},"spec":{"unschedulable":true}}],"items":[` + nodeB + `]}}`,
	`{"Pod":` + podWithClaim + `,"Nodes":{"items":[` + nodeA + `,` + nodeB + `],"items":[{"spec":{}}],"items":[{"spec":{}},null]}}`,
	`{"Pod":` + podWithClaim + `,"Nodes":{"items":[` + nodeA + `,` + nodeB + `],"items":[],"items":[{"spec":{}}]}}`,
	`{"Pod":` + podWithClaim + `,"Nodes":{"items":[` + nodeA + `]},"Nodes":{"kind":"NodeList"}}`,
	`{"Pod":` + podWithClaim + `,"Nodes":{"items":[` + nodeA + `]},"Nodes":null,"Nodes":{"items":[` + nodeB + `]}}`,
	`{"Pod":` + podWithClaim + `,"Nodes":{"metadata":{"resourceVersion":"1"},"metadata":{"continue":"c"},"items":[` + nodeA + `]}}`,
	`{"Pod":` + podWithClaim + `,"Nodes":{"items":[{"metadata":{"name":"a"},"metadata":{"labels":{}}},{"metadata":{"name":"b","name":null}}]}}`,
	`{"Pod":` + podWithClaim + `,"Nodes":{"items":[null]}}`,
	`{"Pod":` + podWithClaim + `,"Nodes":{"items":null}}`,
	`{"Pod":` + podWithClaim + `,"Nodes":{"kind":null,"items":[` + nodeA + `]}}`,
	// Type errors encoding/json reports (the old reader accepted the first three).
	`{"Pod":` + podWithClaim + `,"Nodes":{"items":5}}`,
	`{"Pod":` + podWithClaim + `,"Nodes":{"kind":5,"items":[` + nodeA + `]}}`,
	`{"Pod":` + podWithClaim + `,"Nodes":{"metadata":{"resourceVersion":5},"items":[` + nodeA + `]}}`,
	`{"Pod":` + podWithClaim + `,"Nodes":{"items":[{"metadata":{"name":5}}]}}`,
	`{"Pod":5,"Pod":` + podWithClaim + `}`,
	`{"NodeNames":5,"NodeNames":["a"]}`,
	// Item content beyond metadata.name is not type-checked (by design).
	`{"Pod":` + podWithClaim + `,"Nodes":{"items":[{"metadata":{"name":"a"},"spec":5}]}}`,
	// Of the Pod only name, namespace and volumes are decoded (podreader.go): a type error
	// elsewhere in it is not an error, one in those fields is, and repeated or null keys on
	// the way to them mean what encoding/json makes of them.
	`{"Pod":{"metadata":{"name":"p","labels":5},"spec":{"containers":5,"volumes":[]}},"NodeNames":["a"]}`,
	`{"Pod":{"metadata":5},"NodeNames":["a"]}`,
	`{"Pod":{"metadata":{"name":5}},"NodeNames":["a"]}`,
	`{"Pod":{"metadata":{"namespace":["x"]}},"NodeNames":["a"]}`,
	`{"Pod":{"spec":[]},"NodeNames":["a"]}`,
	`{"Pod":{"spec":{"volumes":5}},"NodeNames":["a"]}`,
	`{"Pod":{"spec":{"volumes":[{"name":5}]}},"NodeNames":["a"]}`,
	`{"Pod":{"spec":{"volumes":[{"name":"v","persistentVolumeClaim":"x"}]}},"NodeNames":["a"]}`,
	`{"Pod":{"metadata":null,"spec":null},"NodeNames":["a"]}`,
	`{"Pod":{"metadata":{"name":null,"namespace":"ns"},"spec":{"volumes":null}},"NodeNames":["a"]}`,
	`{"Pod":{"metadata":{"name":"a"},"metadata":{"namespace":"b"}},"NodeNames":["a"]}`,
	`{"Pod":{"metadata":{"name":"a","Name":"b","NAMESPACE":"c"}},"NodeNames":["a"]}`,
	`{"Pod":{"spec":{"volumes":[{"name":"a","persistentVolumeClaim":{"claimName":"c1"}},{"name":"b"}]},"SPEC":{"volumes":[{"flexVolume":{"driver":"datera/iscsi"}}]}},"NodeNames":["a"]}`,
	`{"Pod":{"spec":{"volumes":[{"name":"a"}],"Volumes":[null,{"name":"b"}]}},"NodeNames":["a"]}`,
	`{"Pod":{"metadata":{"n\u0061me":"esc\u00e9","namespace":"x"},"ſpec":{"volumes":[{"name":"v"}]}},"NodeNames":["a"]}`,
	`{"Pod":[],"NodeNames":["a"]}`,
	`{"Pod":"x","NodeNames":["a"]}`,
	`{"Pod":{"metadata":{"name":"a"}},"Pod":{"spec":{"volumes":[{"name":"v","persistentVolumeClaim":{"claimName":"c"}}]}},"NodeNames":["a"]}`,
	// Case folding, escapes, invalid UTF-8.
	`{"Node\u004eames":["a"],"pOD":{}}`,
	`{"NodeNames":["a\u0062","\ud800"]}`,
	"{\"NodeNames\":[\"bad\xff\"],\"Nodes\":{\"items\":[{\"metadata\":{\"name\":\"n\xfe\"}}]}}",
	`{"NodeNameſ":["long s folds to s"]}`,
	`null`, ` null `, `{}`, `[]`, `"x"`,
}

// TestDecodeArgsMatchesEncodingJSON runs the attack documents: repeated keys and the
// other inputs whose meaning is encoding/json's merge rules.
func TestDecodeArgsMatchesEncodingJSON(t *testing.T) {
	for _, s := range equivSeeds {
		t.Run(s, func(t *testing.T) { sameAsEncodingJSON(t, []byte(s)) })
	}
}

// TestDuplicateKeysDecideLikeTheScheduler pins the decisions that depended on the
// difference: which nodes the extender answers for and whether the pod has volumes.
func TestDuplicateKeysDecideLikeTheScheduler(t *testing.T) {
	var a args
	require.NoError(t, decodeArgs([]byte(`{"Pod":`+podWithClaim+`,"Nodes":{"items":[{"metadata":{"name":"x"}}],"items":[`+nodeA+`,`+nodeB+`]}}`), &a))
	assert.Equal(t, []string{"a", "b"}, a.list.names, "the second items array replaces the first, element by element")

	a = args{}
	require.NoError(t, decodeArgs([]byte(`{"Pod":`+podWithClaim+`,"Pod":{"metadata":{"name":"db-0"}},"NodeNames":["a"]}`), &a))
	require.NotNil(t, a.Pod)
	require.Len(t, a.Pod.Spec.Volumes, 1, "the second Pod merges into the first; the claim stays")

	// A filter answer built from a merged document is a valid NodeList the scheduler reads
	// back to the same nodes.
	a = args{}
	require.NoError(t, decodeArgs([]byte(`{"Pod":`+podWithClaim+`,"Nodes":{"items":[{"metadata":{"name":"a"},"spec":{"unschedulable":true}}],"items":[`+nodeB+`]}}`), &a))
	out := appendFilterResult(nil, &filterResult{list: a.list, pass: []int{0}})
	var res extenderv1.ExtenderFilterResult
	require.NoError(t, json.Unmarshal(out, &res))
	require.Len(t, res.Nodes.Items, 1)
	assert.Equal(t, "b", res.Nodes.Items[0].Name)
	assert.True(t, res.Nodes.Items[0].Spec.Unschedulable)
}

// FuzzDecodeArgsMatchesEncodingJSON: for any input, decodeArgs accepts exactly what
// encoding/json accepts (apart from item content beyond metadata.name) and the decoded
// values are equal. Inputs the fuzzer found are kept under testdata/fuzz.
func FuzzDecodeArgsMatchesEncodingJSON(f *testing.F) {
	for _, s := range equivSeeds {
		f.Add([]byte(s))
	}
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) { sameAsEncodingJSON(t, b) })
}

// sameInterned checks the interning path on b, which decodeArgs decoded to a: with a set
// of known names (every other name of a, and one name a does not have) the reader decodes
// the same names, its plain names' answer is the one appendString writes, and a name it
// reports as missed is one not in the set.
func sameInterned(t testing.TB, b []byte, a *args) {
	t.Helper()
	var names []string
	if a.NodeNames != nil {
		names = *a.NodeNames
	} else if a.list != nil {
		names = a.list.names
	}
	known := nameSet{"not-in-the-request": {name: "not-in-the-request"}}
	for i, n := range names {
		if i%2 == 0 {
			known[n] = knownName{name: strings.Clone(n)}
		}
	}
	var ai args
	if err := decodeArgsInto(b, &ai, known, nil); err != nil {
		t.Fatalf("decodeArgs accepts %q, decodeArgsInto with known names does not: %v", b, err)
	}
	var got []string
	if ai.NodeNames != nil {
		got = *ai.NodeNames
	} else if ai.list != nil {
		got = ai.list.names
	}
	require.Equal(t, names, got, "interned names for %q", b)
	require.Equal(t, a.NodeNames == nil, ai.NodeNames == nil)
	for _, m := range ai.missedNames {
		if _, ok := known[m]; ok {
			t.Fatalf("%q reported missed but known, for %q", m, b)
		}
	}
	if ai.NodeNames != nil {
		require.Equal(t, a.namesPlain, ai.namesPlain)
		// The plain echo is byte for byte what escaping each name writes, and encoding/json
		// reads it back to the names.
		echo := appendStrings(nil, got, ai.namesPlain)
		require.Equal(t, string(appendStrings(nil, got, false)), string(echo), "echo of %q", b)
		var back []string
		require.NoError(t, json.Unmarshal(echo, &back))
		require.Equal(t, got, back)
	}
}
