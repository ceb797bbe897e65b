package fake_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera/fake"
)

// api is a raw HTTP view of a simulator: these tests check the wire format itself.
type api struct {
	t      *testing.T
	srv    *fake.Server
	url    string
	token  string
	tenant string
	ver    string
}

func newAPI(t *testing.T, opts fake.Options) *api {
	t.Helper()
	s, err := fake.New(opts)
	require.NoError(t, err)
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	a := &api{t: t, srv: s, url: hs.URL, ver: "v2.2"}
	a.token = a.login("admin", "password")
	return a
}

func (a *api) login(user, password string) string {
	a.t.Helper()
	status, body := a.raw(http.MethodPut, "/"+a.ver+"/login", map[string]string{"name": user, "password": password}, "")
	require.Equal(a.t, 200, status, "%v", body)
	return body["key"].(string)
}

// raw sends a request (body JSON-encoded unless it is a string) and decodes the JSON answer.
func (a *api) raw(method, path string, body any, token string) (int, map[string]any) {
	a.t.Helper()
	var rd io.Reader
	ctype := "application/json"
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case url.Values:
		rd = strings.NewReader(b.Encode())
		ctype = "application/x-www-form-urlencoded"
	default:
		buf, err := json.Marshal(b)
		require.NoError(a.t, err)
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequest(method, a.url+path, rd)
	require.NoError(a.t, err)
	req.Header.Set("Content-Type", ctype)
	if token != "" {
		req.Header.Set("Auth-Token", token)
	}
	if a.tenant != "" {
		req.Header.Set("tenant", a.tenant)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(a.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(a.t, err)
	out := map[string]any{}
	require.NoError(a.t, json.Unmarshal(raw, &out), "body %q", raw)
	return resp.StatusCode, out
}

// call is raw with the API version prefix and the session token.
func (a *api) call(method, path string, body any) (int, map[string]any) {
	a.t.Helper()
	return a.raw(method, "/"+a.ver+path, body, a.token)
}

func (a *api) mustOK(method, path string, body any) map[string]any {
	a.t.Helper()
	status, out := a.call(method, path, body)
	require.Equal(a.t, 200, status, "%s %s: %v", method, path, out)
	return out
}

func data(env map[string]any) map[string]any { return env["data"].(map[string]any) }

func createVolume(name string, size int) map[string]any {
	return map[string]any{"name": name, "storage_instances": []any{map[string]any{
		"name": "storage-1", "volumes": []any{map[string]any{"name": "volume-1", "size": size}},
	}}}
}

func si0(ai map[string]any) map[string]any {
	return ai["storage_instances"].([]any)[0].(map[string]any)
}

func TestAPIVersionsAndUnknownPaths(t *testing.T) {
	a := newAPI(t, fake.Options{})
	status, body := a.raw(http.MethodGet, "/api_versions", nil, "")
	assert.Equal(t, 200, status)
	assert.Equal(t, []any{"v2", "v2.1", "v2.2"}, body["api_versions"], "unauthenticated, no version prefix")

	status, body = a.raw(http.MethodGet, "/v3/app_instances", nil, a.token)
	assert.Equal(t, 404, status)
	assert.Equal(t, "UnsupportedVersionError", body["name"])

	status, body = a.call(http.MethodGet, "/no_such_thing", nil)
	assert.Equal(t, 404, status)
	assert.Equal(t, "NotFoundError", body["name"])
}

func TestLogin(t *testing.T) {
	a := newAPI(t, fake.Options{})
	tests := []struct {
		name     string
		ver      string
		body     any
		status   int
		errName  string
		errMatch string
	}{
		{"json", "v2.2", map[string]string{"name": "admin", "password": "password"}, 200, "", ""},
		{"form (GOSDK)", "v2.2", url.Values{"name": {"admin"}, "password": {"password"}}, 200, "", ""},
		{"v2.1", "v2.1", map[string]string{"name": "admin", "password": "password"}, 200, "", ""},
		{"wrong password", "v2.2", map[string]string{"name": "admin", "password": "passwordX"}, 401, "AuthFailedError", "invalid user name or password"},
		{"unknown user", "v2.2", map[string]string{"name": "root", "password": "password"}, 401, "AuthFailedError", ""},
		{"name pattern", "v2.2", map[string]string{"name": "ad", "password": "password"}, 422, "ValidationFailedError", "name"},
		{"password pattern", "v2.2", map[string]string{"name": "admin", "password": "1pw"}, 422, "ValidationFailedError", "password"},
		{"missing password", "v2.2", map[string]string{"name": "admin"}, 422, "ValidationFailedError", "password is required"},
		{"unknown key", "v2.2", map[string]string{"name": "admin", "password": "password", "otp": "1"}, 422, "ValidationFailedError", "otp"},
		{"form with unknown key", "v2.2", url.Values{"name": {"admin"}, "password": {"password"}, "x": {"1"}}, 422, "ValidationFailedError", ""},
		{"malformed json", "v2.2", `{"name":`, 400, "InvalidRequestError", "not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := a.raw(http.MethodPut, "/"+tt.ver+"/login", tt.body, "")
			require.Equal(t, tt.status, status, "%v", body)
			if tt.status == 200 {
				assert.Regexp(t, `^[0-9a-f]{32}$`, body["key"])
				assert.Equal(t, tt.ver, body["version"])
				assert.NotContains(t, body, "data", "login has no envelope")
				return
			}
			assert.Equal(t, tt.errName, body["name"])
			assert.EqualValues(t, tt.status, body["http"])
			assert.NotZero(t, body["code"])
			all, _ := json.Marshal(body)
			assert.Contains(t, string(all), tt.errMatch)
			assert.NotContains(t, string(all), "passwordX", "a password is never echoed")
		})
	}
}

func TestSessions(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	a := newAPI(t, fake.Options{Now: clock, TokenTTL: 10 * time.Minute})

	status, body := a.raw(http.MethodGet, "/v2.2/app_instances", nil, "")
	assert.Equal(t, 401, status)
	assert.Equal(t, "AuthFailedError", body["name"])
	assert.Equal(t, "The key provided with the request does not correspond to a valid session.", body["message"])

	status, _ = a.call(http.MethodGet, "/app_instances", nil)
	assert.Equal(t, 200, status)
	mu.Lock()
	now = now.Add(10*time.Minute - time.Second)
	mu.Unlock()
	status, _ = a.call(http.MethodGet, "/app_instances", nil)
	assert.Equal(t, 200, status, "valid until the TTL")
	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	status, _ = a.call(http.MethodGet, "/app_instances", nil)
	assert.Equal(t, 401, status, "absolute expiry")

	a.token = a.login("admin", "password")
	assert.Equal(t, 1, a.srv.SessionCount())
	a.mustOK(http.MethodPut, "/logout", nil)
	status, _ = a.call(http.MethodGet, "/app_instances", nil)
	assert.Equal(t, 401, status, "logout ends the session")

	a.token = a.login("admin", "password")
	a.srv.ExpireSessions()
	status, _ = a.call(http.MethodGet, "/app_instances", nil)
	assert.Equal(t, 401, status)
	assert.Zero(t, a.srv.SessionCount())
}

func TestEnvelopeAndAddressing(t *testing.T) {
	a := newAPI(t, fake.Options{})
	env := a.mustOK(http.MethodPost, "/app_instances", createVolume("pvc-env", 3))
	assert.Equal(t, "/root", env["tenant"])
	assert.Equal(t, "v2.2", env["version"])
	ai := data(env)
	id := ai["id"].(string)
	assert.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, id)
	assert.Equal(t, "/app_instances/"+id, env["path"])
	assert.Equal(t, "/app_instances/"+id, ai["path"], "paths use the id")
	assert.Equal(t, map[string]any{"path": "", "resolved_path": "", "resolved_tenant": ""}, ai["app_template"], "always present")
	si := si0(ai)
	siPath := "/app_instances/" + id + "/storage_instances/storage-1"
	assert.Equal(t, siPath, si["path"])
	assert.Equal(t, siPath+"/access", si["access"].(map[string]any)["path"])
	assert.Regexp(t, `^iqn\.2013-05\.com\.daterainc:tc:01:sn:[0-9a-f]{16}$`, si["access"].(map[string]any)["iqn"])
	assert.Equal(t, siPath+"/acl_policy", si["acl_policy"].(map[string]any)["path"])
	assert.Equal(t, "/access_network_ip_pools/default", si["ip_pool"].(map[string]any)["path"])
	assert.Equal(t, "none", si["auth"].(map[string]any)["type"])
	v := si["volumes"].([]any)[0].(map[string]any)
	assert.Equal(t, siPath+"/volumes/volume-1", v["path"])
	assert.EqualValues(t, 3, v["replica_count"], "replica defaults to 3")
	assert.Equal(t, "hybrid", v["placement_mode"])

	byName := data(a.mustOK(http.MethodGet, "/app_instances/pvc-env", nil))
	byID := data(a.mustOK(http.MethodGet, "/app_instances/"+id, nil))
	assert.Equal(t, byName, byID, "the :id slot takes the id or the name")
	// Follow-up calls reuse server-returned paths (GOSDK does).
	a.mustOK(http.MethodGet, siPath+"/volumes/volume-1", nil)
	a.mustOK(http.MethodGet, siPath+"/acl_policy", nil)

	status, body := a.call(http.MethodGet, "/app_instances/pvc-nope", nil)
	assert.Equal(t, 404, status)
	for _, k := range []string{"name", "code", "http", "message", "ts", "version", "op", "tenant", "path", "params", "api_req_id", "errors"} {
		assert.Contains(t, body, k)
	}
	assert.Contains(t, body["message"], "does not exist")

	// GOSDK sends JSON bodies on GET: ignored.
	status, _ = a.call(http.MethodGet, "/app_instances/pvc-env", map[string]any{"params": map[string]any{"x": 1}})
	assert.Equal(t, 200, status)
}

func TestAppInstanceValidation(t *testing.T) {
	a := newAPI(t, fake.Options{})
	a.mustOK(http.MethodPost, "/app_instances", createVolume("pvc-taken", 1))
	withVol := func(vol map[string]any) map[string]any {
		vol["name"] = "volume-1"
		return map[string]any{"name": "pvc-x", "storage_instances": []any{map[string]any{"name": "storage-1", "volumes": []any{vol}}}}
	}
	tests := []struct {
		name    string
		ver     string
		body    any
		status  int
		errName string
	}{
		{"unknown property", "v2.2", map[string]any{"name": "pvc-x", "colour": "red"}, 422, "ValidationFailedError"},
		{"unknown nested property", "v2.2", withVol(map[string]any{"size": 1, "thin": true}), 422, "ValidationFailedError"},
		{"name too short", "v2.2", createVolume("ab", 1), 422, "ValidationFailedError"},
		{"name with a space", "v2.2", createVolume("pvc x", 1), 422, "ValidationFailedError"},
		{"missing name", "v2.2", map[string]any{"descr": "x"}, 422, "ValidationFailedError"},
		{"size 0", "v2.2", createVolume("pvc-x", 0), 422, "ValidationFailedError"},
		{"size 32769", "v2.2", createVolume("pvc-x", 32769), 422, "ValidationFailedError"},
		{"size not an integer", "v2.2", withVol(map[string]any{"size": 1.5}), 422, "ValidationFailedError"},
		{"size missing", "v2.2", withVol(map[string]any{}), 422, "ValidationFailedError"},
		{"replica 0", "v2.2", withVol(map[string]any{"size": 1, "replica_count": 0}), 422, "ValidationFailedError"},
		{"replica 6", "v2.2", withVol(map[string]any{"size": 1, "replica_count": 6}), 422, "ValidationFailedError"},
		{"placement", "v2.2", withVol(map[string]any{"size": 1, "placement_mode": "fast"}), 422, "ValidationFailedError"},
		{"create_mode", "v2.2", map[string]any{"name": "pvc-x", "create_mode": "petset"}, 422, "ValidationFailedError"},
		{"access_control_mode", "v2.2", map[string]any{"name": "pvc-x", "access_control_mode": "some"}, 422, "ValidationFailedError"},
		{"duplicate name", "v2.2", createVolume("pvc-taken", 1), 409, "ConflictError"},
		{"template_override on v2.1", "v2.1", map[string]any{"name": "pvc-x", "template_override": map[string]any{}}, 422, "ValidationFailedError"},
		{"placement_policy on v2.1", "v2.1", withVol(map[string]any{"size": 1, "placement_policy": map[string]any{"path": "/placement_policies/default"}}), 422, "ValidationFailedError"},
		{"clone", "v2.2", map[string]any{"name": "pvc-x", "clone_src": map[string]any{"path": "/app_instances/pvc-taken"}}, 400, "InvalidRequestError"},
		{"unknown ip pool", "v2.2", map[string]any{"name": "pvc-x", "storage_instances": []any{map[string]any{"name": "storage-1", "ip_pool": map[string]any{"path": "/access_network_ip_pools/nope"}}}}, 404, "NotFoundError"},
		{"duplicate storage_instance", "v2.2", map[string]any{"name": "pvc-x", "storage_instances": []any{map[string]any{"name": "storage-1"}, map[string]any{"name": "storage-1"}}}, 400, "InvalidRequestError"},
		{"CHAP password too short", "v2.2", map[string]any{"name": "pvc-x", "storage_instances": []any{map[string]any{"name": "storage-1", "auth": map[string]any{"type": "chap", "target_user_name": "user1", "target_pswd": "short"}}}}, 422, "ValidationFailedError"},
		{"missing template", "v2.2", map[string]any{"name": "pvc-x", "app_template": map[string]any{"path": "/app_templates/t"}}, 404, "NotFoundError"},
		{"template and storage", "v2.2", map[string]any{"name": "pvc-x", "app_template": map[string]any{"path": "/app_templates/t"}, "storage_instances": []any{map[string]any{"name": "storage-1"}}}, 400, "InvalidRequestError"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.ver = tt.ver
			defer func() { a.ver = "v2.2" }()
			status, body := a.call(http.MethodPost, "/app_instances", tt.body)
			require.Equal(t, tt.status, status, "%v", body)
			assert.Equal(t, tt.errName, body["name"])
		})
	}
	status, body := a.call(http.MethodGet, "/app_instances", nil)
	require.Equal(t, 200, status)
	assert.Len(t, body["data"], 1, "nothing invalid was created")

	// v2.2 accepts what v2.1 refuses; CHAP passwords read back hidden.
	env := a.mustOK(http.MethodPost, "/app_instances", map[string]any{"name": "pvc-chap", "storage_instances": []any{map[string]any{
		"name": "storage-1", "auth": map[string]any{"type": "chap", "target_user_name": "user1", "target_pswd": "twelve-chars"},
		"volumes": []any{map[string]any{"name": "volume-1", "size": 1, "placement_policy": map[string]any{"path": "/placement_policies/default"}}},
	}}})
	auth := si0(data(env))["auth"].(map[string]any)
	assert.Equal(t, "(hidden)", auth["target_pswd"])
	assert.Equal(t, "user1", auth["target_user_name"])
}

func TestStateMachine(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	a := newAPI(t, fake.Options{Now: clock, OnlineDelay: 3 * time.Second, Portals: []string{"198.51.100.1", "198.51.100.2"}})
	ai := data(a.mustOK(http.MethodPost, "/app_instances", createVolume("pvc-sm", 1)))
	assert.Equal(t, "offline", ai["admin_state"])
	assert.Equal(t, "deny_all", ai["access_control_mode"], "deny_all by default")
	si := si0(ai)
	assert.Equal(t, "unavailable", si["op_state"])
	assert.Empty(t, si["access"].(map[string]any)["ips"])

	si = si0(data(a.mustOK(http.MethodPut, "/app_instances/pvc-sm", map[string]any{"admin_state": "online"})))
	assert.Equal(t, "online", si["admin_state"])
	assert.Equal(t, "unavailable", si["op_state"], "not yet: OnlineDelay")
	assert.Empty(t, si["access"].(map[string]any)["ips"])
	mu.Lock()
	now = now.Add(3 * time.Second)
	mu.Unlock()
	si = data(a.mustOK(http.MethodGet, "/app_instances/pvc-sm/storage_instances/storage-1", nil))
	assert.Equal(t, "available", si["op_state"])
	assert.Equal(t, []any{"198.51.100.1", "198.51.100.2"}, si["access"].(map[string]any)["ips"])
	acc := data(a.mustOK(http.MethodGet, "/app_instances/pvc-sm/storage_instances/storage-1/access", nil))
	assert.Equal(t, si["access"], acc)

	status, body := a.call(http.MethodDelete, "/app_instances/pvc-sm", nil)
	assert.Equal(t, 400, status, "an online app_instance cannot be deleted")
	assert.Equal(t, "InvalidRequestError", body["name"])

	require.NoError(t, a.srv.SetActiveInitiators("/root", "pvc-sm", "storage-1", []string{"iqn.1993-08.org.debian:01:a"}))
	status, body = a.call(http.MethodPut, "/app_instances/pvc-sm", map[string]any{"admin_state": "offline"})
	assert.Equal(t, 400, status)
	assert.Contains(t, body["message"], "override this warning")
	ai = data(a.mustOK(http.MethodPut, "/app_instances/pvc-sm", map[string]any{"admin_state": "offline", "force": true}))
	assert.Equal(t, "offline", ai["admin_state"])
	assert.Empty(t, si0(ai)["active_initiators"], "forced offline ends the sessions")

	status, _ = a.call(http.MethodPut, "/app_instances/pvc-sm", map[string]any{"admin_state": "paused"})
	assert.Equal(t, 422, status)

	deleted := a.mustOK(http.MethodDelete, "/app_instances/pvc-sm", map[string]any{"force": true})
	assert.Equal(t, "pvc-sm", data(deleted)["name"], "DELETE returns the deleted entity")
	status, _ = a.call(http.MethodGet, "/app_instances/pvc-sm", nil)
	assert.Equal(t, 404, status)

	// SI-level state and access control mode.
	a.mustOK(http.MethodPost, "/app_instances", map[string]any{"name": "pvc-open", "access_control_mode": "allow_all",
		"storage_instances": []any{map[string]any{"name": "storage-1"}}})
	si = data(a.mustOK(http.MethodPut, "/app_instances/pvc-open/storage_instances/storage-1", map[string]any{"admin_state": "online"}))
	assert.Equal(t, "online", si["admin_state"])
	si = data(a.mustOK(http.MethodPut, "/app_instances/pvc-open/storage_instances/storage-1", map[string]any{"access_control_mode": "deny_all"}))
	assert.Equal(t, "deny_all", si["access_control_mode"])
	status, _ = a.call(http.MethodPut, "/app_instances/pvc-open/storage_instances/storage-1", map[string]any{"access_control_mode": "allow_all"})
	assert.Equal(t, 400, status, "only allow_all → deny_all")
}

func TestVolumeUpdatesAndPerformancePolicy(t *testing.T) {
	a := newAPI(t, fake.Options{})
	a.mustOK(http.MethodPost, "/app_instances", createVolume("pvc-vol", 10))
	vol := "/app_instances/pvc-vol/storage_instances/storage-1/volumes/volume-1"
	tests := []struct {
		name   string
		method string
		path   string
		body   any
		status int
	}{
		{"grow", http.MethodPut, vol, map[string]any{"size": 20}, 200},
		{"shrink", http.MethodPut, vol, map[string]any{"size": 19}, 400},
		{"too big", http.MethodPut, vol, map[string]any{"size": 40000}, 422},
		{"replicas", http.MethodPut, vol, map[string]any{"replica_count": 5}, 200},
		{"unknown", http.MethodPut, vol, map[string]any{"thin": true}, 422},
		{"no policy yet", http.MethodGet, vol + "/performance_policy", nil, 404},
		{"update absent policy", http.MethodPut, vol + "/performance_policy", map[string]any{"total_iops_max": 1}, 404},
		{"create policy", http.MethodPost, vol + "/performance_policy", map[string]any{"total_iops_max": 100}, 200},
		{"create twice", http.MethodPost, vol + "/performance_policy", map[string]any{"total_iops_max": 100}, 409},
		{"update policy", http.MethodPut, vol + "/performance_policy", map[string]any{"total_bandwidth_max": 2048}, 200},
		{"iops out of range", http.MethodPut, vol + "/performance_policy", map[string]any{"read_iops_max": 10_000_001}, 422},
		{"bandwidth out of range", http.MethodPut, vol + "/performance_policy", map[string]any{"write_bandwidth_max": -1}, 422},
		{"missing volume", http.MethodGet, "/app_instances/pvc-vol/storage_instances/storage-1/volumes/volume-9", nil, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := a.call(tt.method, tt.path, tt.body)
			assert.Equal(t, tt.status, status, "%v", body)
		})
	}
	v := data(a.mustOK(http.MethodGet, vol, nil))
	assert.EqualValues(t, 20, v["size"])
	assert.EqualValues(t, 5, v["replica_count"])
	pp := v["performance_policy"].(map[string]any)
	assert.EqualValues(t, 100, pp["total_iops_max"], "PUT keeps unspecified limits")
	assert.EqualValues(t, 2048, pp["total_bandwidth_max"])
	deleted := data(a.mustOK(http.MethodDelete, vol+"/performance_policy", nil))
	assert.EqualValues(t, 100, deleted["total_iops_max"])
	status, _ := a.call(http.MethodDelete, vol+"/performance_policy", nil)
	assert.Equal(t, 404, status)
}

func TestListsAndMetadata(t *testing.T) {
	a := newAPI(t, fake.Options{})
	for _, n := range []string{"pvc-c", "pvc-a", "db-b", "pvc-d"} {
		a.mustOK(http.MethodPost, "/app_instances", createVolume(n, 1))
	}
	names := func(env map[string]any) []string {
		var out []string
		for _, it := range env["data"].([]any) {
			out = append(out, it.(map[string]any)["name"].(string))
		}
		return out
	}
	env := a.mustOK(http.MethodGet, "/app_instances?limit=2&offset=1", nil)
	assert.Equal(t, []string{"pvc-a", "db-b"}, names(env), "creation order")
	assert.Equal(t, map[string]any{"total_count": 4.0, "request_count": 2.0, "offset": 1.0, "limit": 2.0}, env["metadata"])
	env = a.mustOK(http.MethodGet, "/app_instances?sort=name", nil)
	assert.Equal(t, []string{"db-b", "pvc-a", "pvc-c", "pvc-d"}, names(env))
	env = a.mustOK(http.MethodGet, "/app_instances?filter=name=pvc-c", nil)
	assert.Equal(t, []string{"pvc-c"}, names(env))
	env = a.mustOK(http.MethodGet, "/app_instances?"+url.Values{"filter": {"match(name,^pvc-[ad]$)"}, "sort": {"-name"}}.Encode(), nil)
	assert.Equal(t, []string{"pvc-d", "pvc-a"}, names(env))
	assert.EqualValues(t, 2, env["metadata"].(map[string]any)["total_count"], "total after filtering")
	status, _ := a.call(http.MethodGet, "/app_instances?limit=1001", nil)
	assert.Equal(t, 422, status)
	status, _ = a.call(http.MethodGet, "/app_instances?filter=size>1", nil)
	assert.Equal(t, 400, status)
	a.ver = "v2.1"
	env = a.mustOK(http.MethodGet, "/app_instances", nil)
	assert.Equal(t, map[string]any{"total": 4.0}, env["metadata"], "v2.1 metadata (SAMPLE21)")
	a.ver = "v2.2"

	md := data(a.mustOK(http.MethodPut, "/app_instances/pvc-a/metadata", map[string]any{"fs_type": "xfs", "formatted": "true"}))
	assert.Equal(t, map[string]any{"fs_type": "xfs", "formatted": "true"}, md)
	md = data(a.mustOK(http.MethodPut, "/app_instances/pvc-a/metadata", map[string]any{"mount_path": "/mnt"}))
	assert.Len(t, md, 3, "PUT merges")
	status, _ = a.call(http.MethodPut, "/app_instances/pvc-a/metadata", map[string]any{"n": 1})
	assert.Equal(t, 422, status, "values must be strings")
	assert.Len(t, data(a.mustOK(http.MethodGet, "/app_instances/pvc-a/metadata", nil)), 3)
}

func TestTemplatesOverHTTP(t *testing.T) {
	a := newAPI(t, fake.Options{})
	tmpl := map[string]any{"name": "silver", "storage_templates": []any{map[string]any{
		"name": "storage-1", "volume_templates": []any{map[string]any{"name": "volume-1", "size": 8, "replica_count": 2}},
	}}}
	a.mustOK(http.MethodPost, "/app_templates", tmpl)
	status, _ := a.call(http.MethodPost, "/app_templates", tmpl)
	assert.Equal(t, 409, status)
	got := data(a.mustOK(http.MethodGet, "/app_templates/silver", nil))
	assert.Equal(t, "/app_templates/silver", got["path"])

	override := func(size any) map[string]any {
		return map[string]any{"storage_instances": map[string]any{"storage-1": map[string]any{"volumes": map[string]any{"volume-1": map[string]any{"size": size}}}}}
	}
	ai := data(a.mustOK(http.MethodPost, "/app_instances", map[string]any{"name": "pvc-t1", "app_template": map[string]any{"path": "/app_templates/silver"}}))
	v := si0(ai)["volumes"].([]any)[0].(map[string]any)
	assert.EqualValues(t, 8, v["size"])
	assert.EqualValues(t, 2, v["replica_count"])
	assert.Equal(t, "/app_templates/silver", ai["app_template"].(map[string]any)["path"])
	ai = data(a.mustOK(http.MethodPost, "/app_instances", map[string]any{"name": "pvc-t2", "app_template": map[string]any{"path": "/app_templates/silver"}, "template_override": override("12")}))
	assert.EqualValues(t, 12, si0(ai)["volumes"].([]any)[0].(map[string]any)["size"], "override sizes are strings")

	status, _ = a.call(http.MethodPost, "/app_instances", map[string]any{"name": "pvc-t3", "app_template": map[string]any{"path": "/app_templates/silver"}, "template_override": override(12)})
	assert.Equal(t, 422, status, "a numeric override size is refused")
	status, _ = a.call(http.MethodPost, "/app_instances", map[string]any{"name": "pvc-t3", "app_template": map[string]any{"path": "/app_templates/silver"}, "template_override": override("big")})
	assert.Equal(t, 422, status)
	status, _ = a.call(http.MethodPost, "/app_instances", map[string]any{"name": "pvc-t3", "app_template": map[string]any{"path": "/app_templates/silver"},
		"template_override": map[string]any{"storage_instances": map[string]any{"storage-9": map[string]any{"volumes": map[string]any{"volume-1": map[string]any{"size": "9"}}}}}})
	assert.Equal(t, 400, status, "override of a name the template lacks")
	used := data(a.mustOK(http.MethodGet, "/app_templates/silver", nil))["app_instances"].([]any)
	assert.Len(t, used, 2)
}

func TestConcurrentRequests(t *testing.T) {
	a := newAPI(t, fake.Options{})
	a.mustOK(http.MethodPost, "/initiators", map[string]any{"id": "iqn.1993-08.org.debian:01:seed", "name": "seed", "force": true})
	const seed = "/initiators/iqn.1993-08.org.debian:01:seed"
	var wg sync.WaitGroup
	failures := make(chan string, 1000)
	for i := range 8 {
		wg.Go(func() {
			name := fmt.Sprintf("pvc-conc-%d", i)
			steps := []struct {
				method, path string
				body         any
			}{
				{http.MethodPost, "/app_instances", createVolume(name, 1)},
				{http.MethodPost, "/initiators", map[string]any{"id": fmt.Sprintf("iqn.1993-08.org.debian:01:node-%d", i), "name": "node", "force": true}},
			}
			for j := range 5 {
				steps = append(steps, []struct {
					method, path string
					body         any
				}{
					{http.MethodPut, "/app_instances/" + name + "/storage_instances/storage-1/acl_policy/initiators", map[string]any{"op": "add", "path": seed}},
					{http.MethodPut, "/app_instances/" + name, map[string]any{"admin_state": []string{"online", "offline"}[j%2], "force": true}},
					{http.MethodPut, "/app_instances/" + name + "/storage_instances/storage-1/acl_policy/initiators", map[string]any{"op": "remove", "path": seed}},
					{http.MethodGet, "/app_instances", nil},
				}...)
			}
			steps = append(steps, []struct {
				method, path string
				body         any
			}{
				{http.MethodPut, "/app_instances/" + name, map[string]any{"admin_state": "offline"}},
				{http.MethodDelete, "/app_instances/" + name, nil},
			}...)
			for _, st := range steps {
				if status, body := a.callNoFail(st.method, st.path, st.body); status != 200 {
					failures <- fmt.Sprintf("%s %s: %d %v", st.method, st.path, status, body)
				}
			}
		})
	}
	wg.Wait()
	close(failures)
	for f := range failures {
		t.Error(f)
	}
	assert.Empty(t, a.mustOK(http.MethodGet, "/app_instances", nil)["data"])
	assert.Len(t, a.mustOK(http.MethodGet, "/initiators", nil)["data"], 9)
}

// callNoFail is call for goroutines other than the test's: it reports instead of failing.
func (a *api) callNoFail(method, path string, body any) (int, string) {
	buf, _ := json.Marshal(body)
	req, err := http.NewRequest(method, a.url+"/"+a.ver+path, bytes.NewReader(buf))
	if err != nil {
		return 0, err.Error()
	}
	req.Header.Set("Auth-Token", a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

func TestRenameSystemTenantsPools(t *testing.T) {
	a := newAPI(t, fake.Options{IPPools: []string{"fast-net"}, Portals: []string{"198.51.100.7"}})
	a.mustOK(http.MethodPost, "/app_instances", createVolume("pvc-old", 2))
	a.mustOK(http.MethodPost, "/app_instances", createVolume("pvc-other", 1))
	status, _ := a.call(http.MethodPut, "/app_instances/pvc-old", map[string]any{"name": "pvc-other"})
	assert.Equal(t, 409, status, "rename onto a taken name")
	a.mustOK(http.MethodPut, "/app_instances/pvc-old", map[string]any{"name": "pvc-new", "descr": "renamed"})
	status, _ = a.call(http.MethodGet, "/app_instances/pvc-old", nil)
	assert.Equal(t, 404, status)
	assert.Equal(t, "renamed", data(a.mustOK(http.MethodGet, "/app_instances/pvc-new", nil))["descr"])
	a.mustOK(http.MethodPost, "/app_instances", createVolume("pvc-old", 1)) // the old name is free again

	sys := data(a.mustOK(http.MethodGet, "/system", nil))
	assert.Equal(t, "3.3.5.0", sys["sw_version"])
	assert.EqualValues(t, int64(4)<<30, sys["total_provisioned_capacity"], "bytes, summed over volumes")

	pools := a.mustOK(http.MethodGet, "/access_network_ip_pools", nil)["data"].([]any)
	assert.Len(t, pools, 2)
	pool := data(a.mustOK(http.MethodGet, "/access_network_ip_pools/fast-net", nil))
	assert.Equal(t, "198.51.100.7", pool["network_paths"].([]any)[0].(map[string]any)["start_ip"])
	ai := data(a.mustOK(http.MethodPost, "/app_instances", map[string]any{"name": "pvc-pool", "storage_instances": []any{map[string]any{
		"name": "storage-1", "ip_pool": map[string]any{"path": "/access_network_ip_pools/fast-net"}}}}))
	assert.Equal(t, "/access_network_ip_pools/fast-net", si0(ai)["ip_pool"].(map[string]any)["path"])

	a.mustOK(http.MethodPost, "/tenants", map[string]any{"name": "team-x"})
	status, _ = a.call(http.MethodPost, "/tenants", map[string]any{"name": "team-x"})
	assert.Equal(t, 409, status)
	status, _ = a.call(http.MethodPost, "/tenants", map[string]any{"name": "y", "parent_path": "/root/none"})
	assert.Equal(t, 422, status, "name too short")
	status, _ = a.call(http.MethodPost, "/tenants", map[string]any{"name": "team-y", "parent_path": "/root/none"})
	assert.Equal(t, 404, status)
	assert.Len(t, a.mustOK(http.MethodGet, "/tenants", nil)["data"], 2)
	a.tenant = "/root/team-x"
	a.mustOK(http.MethodPost, "/app_instances", createVolume("pvc-old", 1)) // tenant-scoped names
	assert.Len(t, a.mustOK(http.MethodGet, "/app_instances", nil)["data"], 1)

	_, err := fake.New(fake.Options{Tenants: []string{"/root/a/b"}})
	assert.ErrorContains(t, err, "parent tenant")
	_, err = fake.New(fake.Options{Users: map[string]string{"ad": "password"}})
	assert.ErrorContains(t, err, "login schema")
}
