package fake_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera/fake"
)

const (
	iqnA = "iqn.1993-08.org.debian:01:node-a"
	iqnB = "iqn.1993-08.org.debian:01:node-b"
)

func TestACLSemantics(t *testing.T) {
	a := newAPI(t, fake.Options{})
	a.mustOK(http.MethodPost, "/app_instances", createVolume("pvc-acl", 1))
	a.mustOK(http.MethodPost, "/initiators", map[string]any{"id": iqnA, "name": "node-a", "force": true})
	a.mustOK(http.MethodPost, "/initiators", map[string]any{"id": iqnB, "name": "node-b", "force": true})
	const acl = "/app_instances/pvc-acl/storage_instances/storage-1/acl_policy"
	paths := func(env map[string]any) []string {
		var out []string
		for _, in := range data(env)["initiators"].([]any) {
			out = append(out, in.(map[string]any)["path"].(string))
		}
		return out
	}

	tests := []struct {
		name      string
		method    string
		path      string
		body      any
		status    int
		wantPaths []string
	}{
		{"replace", http.MethodPut, acl, map[string]any{"initiators": []any{map[string]any{"path": "/initiators/" + iqnA}}}, 200, []string{"/initiators/" + iqnA}},
		{"elements are {path} only", http.MethodPut, acl, map[string]any{"initiators": []any{map[string]any{"path": "/initiators/" + iqnA, "tenant": "/root"}}}, 422, nil},
		{"unknown initiator", http.MethodPut, acl, map[string]any{"initiators": []any{map[string]any{"path": "/initiators/iqn.1993-08.org.debian:01:zz"}}}, 404, nil},
		{"initiator groups do not exist", http.MethodPut, acl, map[string]any{"initiator_groups": []any{map[string]any{"path": "/initiator_groups/g1"}}}, 404, nil},
		{"add", http.MethodPut, acl + "/initiators", map[string]any{"op": "add", "path": "/initiators/" + iqnB}, 200, []string{"/initiators/" + iqnA, "/initiators/" + iqnB}},
		{"add again", http.MethodPut, acl + "/initiators", map[string]any{"op": "add", "path": "/initiators/" + iqnB}, 409, nil},
		{"add unknown", http.MethodPut, acl + "/initiators", map[string]any{"op": "add", "path": "/initiators/iqn.1993-08.org.debian:01:zz"}, 404, nil},
		{"bad op", http.MethodPut, acl + "/initiators", map[string]any{"op": "toggle", "path": "/initiators/" + iqnB}, 422, nil},
		{"remove", http.MethodPut, acl + "/initiators", map[string]any{"op": "remove", "path": "/initiators/" + iqnA}, 200, []string{"/initiators/" + iqnB}},
		{"remove absent", http.MethodPut, acl + "/initiators", map[string]any{"op": "remove", "path": "/initiators/" + iqnA}, 404, nil},
		{"clear", http.MethodPut, acl, map[string]any{"initiators": []any{}}, 200, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := a.call(tt.method, tt.path, tt.body)
			require.Equal(t, tt.status, status, "%v", body)
			if status == 200 {
				assert.Equal(t, tt.wantPaths, paths(body))
				assert.Equal(t, paths(body), paths(a.mustOK(http.MethodGet, acl, nil)))
			}
		})
	}

	a.mustOK(http.MethodPut, acl+"/initiators", map[string]any{"op": "add", "path": "/initiators/" + iqnA})
	got := data(a.mustOK(http.MethodGet, acl, nil))["initiators"].([]any)[0].(map[string]any)
	assert.Equal(t, map[string]any{"path": "/initiators/" + iqnA, "id": iqnA, "name": "node-a", "tenant": "/root"}, got,
		"GET returns more than {path}, so a client PUTting it back unfiltered is caught")

	status, body := a.call(http.MethodDelete, "/initiators/"+iqnA, nil)
	assert.Equal(t, 400, status, "an initiator in an ACL cannot be deleted: %v", body)
	a.mustOK(http.MethodDelete, "/initiators/"+iqnB, nil)
	status, _ = a.call(http.MethodGet, "/initiators/"+iqnB, nil)
	assert.Equal(t, 404, status)
}

func TestInitiatorRules(t *testing.T) {
	a := newAPI(t, fake.Options{Tenants: []string{"/root/team-a", "/root/team-a/sub"}})
	tests := []struct {
		name    string
		tenant  string
		ver     string
		body    any
		status  int
		message string
	}{
		{"first initiator needs force", "", "v2.2", map[string]any{"id": iqnA, "name": "node-a"}, 400, "override this warning"},
		{"forced", "", "v2.2", map[string]any{"id": iqnA, "name": "node-a", "force": true}, 200, ""},
		{"second one in /root needs no force", "", "v2.2", map[string]any{"id": iqnB, "name": "node-b"}, 200, ""},
		{"duplicate", "", "v2.2", map[string]any{"id": iqnA, "name": "node-a", "force": true}, 409, ""},
		{"sub-tenant needs force", "/root/team-a", "v2.2", map[string]any{"id": iqnA, "name": "node-a"}, 400, "override this warning"},
		{"sub-tenant local copy of an inherited one", "/root/team-a", "v2.2", map[string]any{"id": iqnA, "name": "node-a", "force": true}, 200, ""},
		{"force is not in the v2.1 schema", "", "v2.1", map[string]any{"id": "iqn.1993-08.org.debian:01:node-c", "name": "node-c", "force": true}, 422, "force"},
		{"v2.1 without force", "", "v2.1", map[string]any{"id": "iqn.1993-08.org.debian:01:node-c", "name": "node-c"}, 200, ""},
		{"id too short", "", "v2.2", map[string]any{"id": "iqn.1993-08.a.b", "name": "node", "force": true}, 422, ""},
		{"eui", "", "v2.2", map[string]any{"id": "eui.0123456789abcdef", "name": "node-e", "force": true}, 200, ""},
		{"label", "", "v2.2", map[string]any{"id": "iqn.1993-08.org.debian:01:node-f", "name": "9", "force": true}, 422, ""},
		{"missing id", "", "v2.2", map[string]any{"name": "node"}, 422, "id is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.tenant, a.ver = tt.tenant, tt.ver
			defer func() { a.tenant, a.ver = "", "v2.2" }()
			status, body := a.call(http.MethodPost, "/initiators", tt.body)
			require.Equal(t, tt.status, status, "%v", body)
			if tt.message != "" {
				assert.Contains(t, body["message"].(string)+" "+joinErrors(body["errors"]), tt.message)
			}
		})
	}

	// Inheritance: /root/team-a/sub sees /root/team-a's copy first, then /root's.
	a.tenant = "/root/team-a/sub"
	in := data(a.mustOK(http.MethodGet, "/initiators/"+iqnA, nil))
	assert.Equal(t, "/root/team-a", in["tenant"])
	in = data(a.mustOK(http.MethodGet, "/initiators/"+iqnB, nil))
	assert.Equal(t, "/root", in["tenant"])
	assert.Len(t, a.mustOK(http.MethodGet, "/initiators", nil)["data"], 4, "own and inherited, without duplicates")
	a.tenant = ""
	a.ver = "v2.1"
	in = data(a.mustOK(http.MethodGet, "/initiators/"+iqnA, nil))
	assert.NotContains(t, in, "tenant", "v2.1 initiators carry no tenant")

	b := newAPI(t, fake.Options{AllowUnforcedInitiators: true})
	b.mustOK(http.MethodPost, "/initiators", map[string]any{"id": iqnA, "name": "node-a"})
}

func joinErrors(v any) string {
	var out string
	if list, ok := v.([]any); ok {
		for _, s := range list {
			out += " " + s.(string)
		}
	}
	return out
}
