package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"time"
)

// RestartAPIServer stops kube-apiserver (SIGTERM, SIGKILL after 10s) and starts it again with
// the same flags on the same port, then waits until it is ready (/readyz). The other
// components keep running and must reconnect by themselves: that is what the fault tests
// exercise. Each restart logs to kube-apiserver-<n>.log in the cluster directory.
func (c *Cluster) RestartAPIServer(ctx context.Context) error {
	idx := -1
	for i, p := range c.procs {
		if p.name == "kube-apiserver" {
			idx = i
		}
	}
	if idx < 0 {
		return fmt.Errorf("restart kube-apiserver: not running in this cluster")
	}
	old := c.procs[idx]
	old.stop(10 * time.Second)
	c.apiserverRestarts++
	name := fmt.Sprintf("kube-apiserver-%d", c.apiserverRestarts)
	p, err := startProcess("kube-apiserver", old.cmd.Path, filepath.Join(c.Dir, name+".log"), old.cmd.Args[1:], nil)
	if err != nil {
		return fmt.Errorf("restart kube-apiserver: %w", err)
	}
	c.procs[idx] = p
	return waitFor(ctx, p, "did not become ready (/readyz) after a restart", func(ctx context.Context) error {
		return c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").Do(ctx).Error()
	})
}
