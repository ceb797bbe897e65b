// Command fakecri serves the Kubernetes fake CRI runtime (k8s.io/cri-client/pkg/fake) on a unix
// socket, so a real kubelet can run pods without a container runtime: sandboxes and containers
// exist only in this process's memory, while kubelet's volume manager still mounts and unmounts
// every pod volume on the host. test/cluster starts one per kubelet node.
//
// Usage: fakecri --endpoint unix:///short/path/cri.sock --root DIR
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-client/pkg/fake"
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
	if err := rt.Start(endpoint); err != nil {
		return err
	}
	defer rt.Stop()

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
