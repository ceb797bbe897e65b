package cluster

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestStartsOverWhenAPortIsTaken: ports are chosen free and then handed to the components,
// so in make test another package's process can take one in between (seen once:
// kube-controller-manager "bind: address already in use"). New then starts over with other
// ports instead of failing the test. Here the controller-manager's first port is held.
func TestStartsOverWhenAPortIsTaken(t *testing.T) {
	RequireBinaries(t)
	held, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = held.Close() }()
	calls := 0
	choosePorts = func(apiserver int) (ports, error) {
		calls++
		p, err := pickPorts(apiserver)
		if calls == 1 {
			p.kcm = held.Addr().(*net.TCPAddr).Port
		}
		return p, err
	}
	t.Cleanup(func() { choosePorts = pickPorts })
	var logs []string
	c := Start(t, Options{Logf: func(format string, args ...any) { logs = append(logs, fmt.Sprintf(format, args...)) }})
	_, err = c.Client.CoreV1().Namespaces().List(t.Context(), metav1.ListOptions{})
	require.NoError(t, err)
	assert.Equal(t, 2, calls, "one start-over")
	assert.Contains(t, strings.Join(logs, "\n"), "starting over with other ports")
	assert.Contains(t, strings.Join(logs, "\n"), "bind: address already in use")
}
