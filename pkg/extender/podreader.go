package extender

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// The extender reads three fields of the Pod it is asked about: metadata.name and
// metadata.namespace (for messages and logs) and spec.volumes (the claims and inline volumes
// that decide placement). Decoding the whole Pod with encoding/json cost a names-only
// request about a fifth of its time (containers, resources, managedFields: a real Pod is
// kilobytes the extender never reads), so the reader validates the Pod as JSON like the
// rest of the body, walks to those three fields itself, and hands encoding/json only the
// volumes array. What the Pod means is then what encoding/json makes of the same bytes
// decoded into slimPod, which argsreader_equiv_test.go fuzzes; the rest of the Pod is
// not type-checked, by design, as the Nodes items are not.

// slimPod is the part of a v1.Pod the extender reads, with v1.Pod's JSON names:
// encoding/json decodes these fields of a Pod document into it exactly as it would into a
// v1.Pod (same key matching, same merging of repeated keys, same handling of null).
type slimPod struct {
	Metadata struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		Volumes []corev1.Volume `json:"volumes"`
	} `json:"spec"`
}

func (s *slimPod) pod() *corev1.Pod {
	p := &corev1.Pod{}
	p.Name, p.Namespace, p.Spec.Volumes = s.Metadata.Name, s.Metadata.Namespace, s.Spec.Volumes
	return p
}

// decodePod decodes the Pod object b (already validated as JSON) into the fields slimPod
// has. A document that repeats one of the keys on the way to them is left to encoding/json,
// whose merge rules then apply.
func decodePod(b []byte) (*corev1.Pod, error) {
	if b[0] != '{' {
		return nil, fmt.Errorf("json: cannot unmarshal %s into Go value of type v1.Pod", jsonKind(b[0]))
	}
	p := &jsonScanner{b: b}
	out := &corev1.Pod{}
	var volumes []byte
	var metas, specs, names, namespaces, volumeLists int
	typeError := func(field, want string) error {
		return fmt.Errorf("json: cannot unmarshal %s into Pod field %s of type %s", jsonKind(p.b[p.i]), field, want)
	}
	str := func(field string, into *string) error {
		switch p.b[p.i] {
		case 'n':
			return p.literal("null")
		case '"':
			s, err := p.stringValue()
			*into = s
			return err
		}
		return typeError(field, "string")
	}
	// object consumes a null at p.i, or reports that an object starts there (else an error).
	object := func(field string) (bool, error) {
		switch p.b[p.i] {
		case 'n':
			return false, p.literal("null")
		case '{':
			return true, nil
		}
		return false, typeError(field, "object")
	}
	err := p.members(func(key []byte) error {
		switch {
		case keyIs(key, "metadata"):
			metas++
			if ok, err := object("metadata"); !ok {
				return err
			}
			return p.members(func(k []byte) error {
				switch {
				case keyIs(k, "name"):
					names++
					return str("metadata.name", &out.Name)
				case keyIs(k, "namespace"):
					namespaces++
					return str("metadata.namespace", &out.Namespace)
				}
				return p.value()
			})
		case keyIs(key, "spec"):
			specs++
			if ok, err := object("spec"); !ok {
				return err
			}
			return p.members(func(k []byte) error {
				if !keyIs(k, "volumes") {
					return p.value()
				}
				volumeLists++
				start := p.i
				err := p.value()
				volumes = p.b[start:p.i]
				return err
			})
		}
		return p.value()
	})
	if err != nil {
		return nil, err
	}
	if metas > 1 || specs > 1 || names > 1 || namespaces > 1 || volumeLists > 1 {
		var s slimPod
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, err
		}
		return s.pod(), nil
	}
	if volumes != nil {
		if err := json.Unmarshal(volumes, &out.Spec.Volumes); err != nil {
			return nil, fmt.Errorf("pod field spec.volumes: %w", err)
		}
	}
	return out, nil
}

// jsonKind names the JSON type of the value starting with c, as encoding/json's type
// errors do.
func jsonKind(c byte) string {
	switch c {
	case '{':
		return "object"
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "bool"
	}
	return "number"
}
