package extender

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func validates(b []byte) bool {
	p := &jsonScanner{b: b}
	p.ws()
	if p.value() != nil {
		return false
	}
	p.ws()
	return p.i == len(b)
}

var jsonSeeds = []string{
	`{}`, `[]`, `""`, `0`, `-0.5e+10`, `true`, `null`, `{"a":[1,2,{"b":"\u00e9\n"}]}`,
	`{"Pod":{"metadata":{"name":"p"}},"NodeNames":["a","b\u0063"]}`,
	`{"Nodes":{"kind":"NodeList","items":[{"metadata":{"name":"a"}},{"metadata":{"name":"b\n"}}]}}`,
	`{"a":}`, `[1,]`, `01`, `1.`, `"\x"`, "\"\x01\"", `{"a" 1}`, `nul`, `[`, `"\ud800"`, "\"\xff\"", ` {} `, `{} x`,
}

func TestValidatorMatchesEncodingJSON(t *testing.T) {
	for _, s := range jsonSeeds {
		assert.Equal(t, json.Valid([]byte(s)), validates([]byte(s)), "%q", s)
	}
}

// FuzzValidator: the hand-written validator accepts exactly what json.Valid accepts.
func FuzzValidator(f *testing.F) {
	for _, s := range jsonSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validates(b), json.Valid(b); got != want {
			t.Fatalf("validator says %v, json.Valid says %v for %q", got, want, b)
		}
		// decodeArgs never accepts invalid JSON, never panics, and the node items it
		// reports lie inside the document.
		var a args
		if decodeArgs(b, &a) == nil {
			if !json.Valid(b) {
				t.Fatalf("decodeArgs accepted invalid JSON %q", b)
			}
			if a.list != nil {
				for _, it := range a.list.Items {
					if !json.Valid(it) || !bytes.Contains(b, it) {
						t.Fatalf("bad item span %q", it)
					}
				}
			}
		}
	})
}

func TestDecodeArgs(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		names   []string
		pod     string
		nodes   string
		list    *rawNodeList
		wantErr string
	}{
		{name: "names", in: `{"Pod":{"metadata":{"name":"p","namespace":"n"}},"Nodes":null,"NodeNames":["a","b\u002dc"]}`, names: []string{"a", "b-c"}, pod: "p"},
		{name: "lower-case keys; a repeated Pod merges into the first, as with encoding/json", in: `{"pod":{"metadata":{"name":"x"}},"POD":{"metadata":{"name":"y"}},"nodenames":[]}`, names: []string{}, pod: "y"},
		{name: "escaped key", in: `{"Node\u004eames":["z"]}`, names: []string{"z"}},
		{name: "nodes raw", in: `{"Nodes":{"items":[{"metadata":{"name":"a"}}]}}`, nodes: `{"items":[{"metadata":{"name":"a"}}]}`},
		{
			name:  "node list parts",
			in:    `{"Nodes":{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"9"},"items":[{"spec":{"x":[{"metadata":{"name":"decoy"}}]},"metadata":{"labels":{"name":"l"},"name":"n\u0031"}}, {"metadata":{"name":"n2"}}]}}`,
			nodes: `{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"9"},"items":[{"spec":{"x":[{"metadata":{"name":"decoy"}}]},"metadata":{"labels":{"name":"l"},"name":"n\u0031"}}, {"metadata":{"name":"n2"}}]}`,
			list:  &rawNodeList{Kind: "NodeList", APIVersion: "v1", names: []string{"n1", "n2"}},
		},
		{name: "unknown keys ignored", in: `{"Extra":[1,{"x":null}],"NodeNames":["a"]}`, names: []string{"a"}},
		{name: "not an object", in: `[]`, wantErr: "must be a JSON object"},
		{name: "trailing data", in: `{} {}`, wantErr: "data after the top-level object"},
		{name: "names not strings", in: `{"NodeNames":[1]}`, wantErr: "array of strings"},
		{name: "names not array", in: `{"NodeNames":"a"}`, wantErr: "not an array"},
		{name: "nodes not object", in: `{"Nodes":[]}`, wantErr: "NodeList object"},
		{name: "pod wrong type", in: `{"Pod":[]}`, wantErr: "field Pod"},
		{name: "broken", in: `{"NodeNames":["a"`, wantErr: "invalid JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var a args
			err := decodeArgs([]byte(tc.in), &a)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			if tc.names != nil {
				require.NotNil(t, a.NodeNames)
				assert.Equal(t, tc.names, *a.NodeNames)
			} else {
				assert.Nil(t, a.NodeNames)
			}
			if tc.pod != "" {
				require.NotNil(t, a.Pod)
				assert.Equal(t, tc.pod, a.Pod.Name)
			}
			assert.Equal(t, tc.nodes, string(a.Nodes))
			if tc.list != nil {
				require.NotNil(t, a.list)
				assert.Equal(t, tc.list.Kind, a.list.Kind)
				assert.Equal(t, tc.list.APIVersion, a.list.APIVersion)
				assert.Equal(t, tc.list.names, a.list.names)
				assert.JSONEq(t, `{"resourceVersion":"9"}`, string(a.list.Metadata))
				require.Len(t, a.list.Items, 2)
				assert.Equal(t, `{"metadata":{"name":"n2"}}`, string(a.list.Items[1]))
			}
		})
	}
}
