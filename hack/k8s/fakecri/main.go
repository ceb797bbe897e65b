// Command fakecri serves the Kubernetes fake CRI runtime (k8s.io/cri-client/pkg/fake) on a unix
// socket, so a real kubelet can run pods without a container runtime: sandboxes and containers
// exist only in this process's memory, while kubelet's volume manager still mounts and unmounts
// every pod volume on the host. test/cluster starts one per kubelet node.
//
// Usage: fakecri --endpoint unix:///short/path/cri.sock --root DIR
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-client/pkg/fake"
	"k8s.io/cri-client/pkg/util"
)

func main() {
	endpoint := flag.String("endpoint", "", "unix socket to serve on, unix:///path (at most 107 bytes of path)")
	root := flag.String("root", "/", "mount point reported as the image and container filesystem")
	flag.Parse()
	if err := run(*endpoint, *root); err != nil {
		fmt.Fprintln(os.Stderr, "fakecri:", err)
		os.Exit(1)
	}
}

func run(endpoint, root string) error {
	if endpoint == "" {
		return fmt.Errorf("--endpoint is required")
	}
	rt := fake.NewFakeRemoteRuntime()
	// kubelet refuses images without a size (ImageInspectError) and needs a cgroup driver and
	// filesystem usage to compute node allocatable and run its image GC.
	rt.ImageService.SetFakeImageSize(1 << 20)
	usage := func() []*runtimeapi.FilesystemUsage {
		return []*runtimeapi.FilesystemUsage{{
			Timestamp:  time.Now().UnixNano(),
			FsId:       &runtimeapi.FilesystemIdentifier{Mountpoint: root},
			UsedBytes:  &runtimeapi.UInt64Value{Value: 1 << 20},
			InodesUsed: &runtimeapi.UInt64Value{Value: 16},
		}}
	}
	rt.ImageService.SetFakeFilesystemUsage(usage())
	rt.ImageService.SetFakeContainerFilesystemUsage(usage())
	rt.RuntimeService.Lock()
	rt.RuntimeService.FakeLinuxConfiguration = &runtimeapi.LinuxRuntimeConfiguration{CgroupDriver: runtimeapi.CgroupDriver_CGROUPFS}
	rt.RuntimeService.Unlock()
	// Served through logPaths rather than rt.Start, whose server would answer with the fake's
	// own CreateContainer (see logPaths).
	rt.RuntimeService.Lock()
	rt.RuntimeService.FakeStatus = &runtimeapi.RuntimeStatus{Conditions: []*runtimeapi.RuntimeCondition{
		{Type: runtimeapi.RuntimeReady, Status: true}, {Type: runtimeapi.NetworkReady, Status: true},
	}}
	rt.RuntimeService.Unlock()
	l, err := util.CreateListener(endpoint)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", endpoint, err)
	}
	srv := grpc.NewServer()
	svc := logPaths{RemoteRuntime: rt, root: root}
	runtimeapi.RegisterRuntimeServiceServer(srv, svc)
	runtimeapi.RegisterImageServiceServer(srv, svc)
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()

	// The fakes record every call in Called and never forget it; kubelet polls several times a
	// second, so clear the records now and then to keep memory flat.
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	for {
		select {
		case <-sig:
			return nil
		case <-tick.C:
			rt.RuntimeService.Lock()
			rt.RuntimeService.Called = rt.RuntimeService.Called[:0]
			rt.RuntimeService.Unlock()
			rt.ImageService.Lock()
			rt.ImageService.Called = rt.ImageService.Called[:0]
			rt.ImageService.Unlock()
			rt.ImageService.SetFakeFilesystemUsage(usage())
			rt.ImageService.SetFakeContainerFilesystemUsage(usage())
		}
	}
}

// logPaths is the fake runtime with a log path for every container. The fake reports none, and
// kubelet, removing a container, deletes "<log path>*": with an empty path that is every file
// in kubelet's working directory. Here each container's log path is the one kubelet asked for
// (the sandbox's log directory joined with the container's log path), or a file under root.
type logPaths struct {
	*fake.RemoteRuntime
	root string
}

func (s logPaths) CreateContainer(ctx context.Context, req *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	resp, err := s.RemoteRuntime.CreateContainer(ctx, req)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(req.GetSandboxConfig().GetLogDirectory(), req.GetConfig().GetLogPath())
	if !filepath.IsAbs(path) || req.GetConfig().GetLogPath() == "" {
		path = filepath.Join(s.root, "fakecri-logs", resp.ContainerId+".log")
	}
	s.RuntimeService.Lock()
	if c, ok := s.RuntimeService.Containers[resp.ContainerId]; ok {
		c.LogPath = path
	}
	s.RuntimeService.Unlock()
	return resp, nil
}
