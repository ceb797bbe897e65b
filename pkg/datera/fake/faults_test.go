package fake_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera/fake"
)

func TestFaultInjection(t *testing.T) {
	const route = "GET /app_instances/{ai}"
	get := "/app_instances/pvc-fault"
	tests := []struct {
		name       string
		fault      fake.Fault
		wantStatus []int
		wantBody   map[string]any // exact body of the first answer, when set
	}{
		{"burst of 503 with a bare message", fake.Fault{Burst: 2}, []int{503, 503, 200},
			map[string]any{"message": "Service Unavailable: the system is busy, retry later"}},
		{"still initializing", fake.Fault{Burst: 1, Status: 500}, []int{500, 200},
			map[string]any{"message": "REST server is still initializing"}},
		{"named error", fake.Fault{Burst: 1, Status: 409}, []int{409, 200}, nil},
		{"always", fake.Fault{ErrorRate: 1}, []int{503, 503, 503}, nil},
		{"session expiry", fake.Fault{ExpireSessions: 1}, []int{401}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAPI(t, fake.Options{})
			a.mustOK(http.MethodPost, "/app_instances", createVolume("pvc-fault", 1))
			a.srv.SetFault(route, tt.fault)
			for i, want := range tt.wantStatus {
				status, body := a.call(http.MethodGet, get, nil)
				require.Equal(t, want, status, "answer %d: %v", i, body)
				if i == 0 && tt.wantBody != nil {
					assert.Equal(t, tt.wantBody, body)
				}
			}
			assert.Equal(t, len(tt.wantStatus), a.srv.Requests(route))
		})
	}
}

func TestFaultErrorRateIsSeeded(t *testing.T) {
	run := func() []int {
		a := newAPI(t, fake.Options{Seed: 42})
		a.srv.SetFault(fake.AllRoutes, fake.Fault{ErrorRate: 0.5})
		var out []int
		for range 200 {
			status, _ := a.call(http.MethodGet, "/system", nil)
			out = append(out, status)
		}
		return out
	}
	first, second := run(), run()
	assert.Equal(t, first, second, "the same seed injects the same faults")
	fails := 0
	for _, s := range first {
		if s == 503 {
			fails++
		}
	}
	assert.InDelta(t, 100, fails, 30, "about half")
}

func TestDroppedConnections(t *testing.T) {
	a := newAPI(t, fake.Options{})
	post := func(name string) error {
		buf, _ := json.Marshal(createVolume(name, 1))
		req, _ := http.NewRequest(http.MethodPost, a.url+"/v2.2/app_instances", bytes.NewReader(buf))
		req.Header.Set("Auth-Token", a.token)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return err
	}
	exists := func(name string) bool {
		status, _ := a.call(http.MethodGet, "/app_instances/"+name, nil)
		return status == 200
	}

	a.srv.SetFault("POST /app_instances", fake.Fault{DropRequests: 1})
	require.Error(t, post("pvc-drop-before"), "the connection was closed without an answer")
	assert.False(t, exists("pvc-drop-before"), "dropped before handling: nothing happened")

	a.srv.SetFault("POST /app_instances", fake.Fault{DropResponses: 1})
	require.Error(t, post("pvc-drop-after"))
	assert.True(t, exists("pvc-drop-after"), "dropped after handling: it happened, the client cannot know")

	require.NoError(t, post("pvc-no-drop"), "count-based faults are used up")
	a.srv.SetFault("POST /app_instances", fake.Fault{})
	a.srv.SetFault(fake.AllRoutes, fake.Fault{DropRate: 1})
	require.Error(t, post("pvc-drop-rate"))
	a.srv.ClearFaults()
	require.NoError(t, post("pvc-after-clear"))
}

func TestLatency(t *testing.T) {
	a := newAPI(t, fake.Options{})
	a.srv.SetFault("GET /system", fake.Fault{Latency: 200 * time.Millisecond})
	start := time.Now()
	a.mustOK(http.MethodGet, "/system", nil)
	assert.GreaterOrEqual(t, time.Since(start), 200*time.Millisecond)
	start = time.Now()
	a.mustOK(http.MethodGet, "/app_instances", nil)
	assert.Less(t, time.Since(start), 200*time.Millisecond, "other routes are not delayed")
}

func TestRoutesAndCounters(t *testing.T) {
	a := newAPI(t, fake.Options{})
	routes := a.srv.Routes()
	for _, r := range []string{"PUT /login", "POST /app_instances", "PUT /app_instances/{ai}", "GET /initiators/{id}",
		"PUT /app_instances/{ai}/storage_instances/{si}/acl_policy/initiators"} {
		assert.True(t, slices.Contains(routes, r), r)
	}
	assert.Equal(t, 1, a.srv.Requests("PUT /login"))
	a.mustOK(http.MethodGet, "/system", nil)
	assert.Equal(t, 2, a.srv.Requests(fake.AllRoutes))
	a.srv.ResetRequests()
	assert.Zero(t, a.srv.Requests(fake.AllRoutes))
}
