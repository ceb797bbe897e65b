package flex

import (
	"os"
	"syscall"
)

// Crash-injection points, named after the step that has just completed. With
// PETFABRIC_FLEX_CRASH_AT=<step> the driver SIGKILLs itself right there, so tests can prove that
// a retry converges from every intermediate state. Unset, a point costs one string compare.
const (
	StepMetadataIntent = "metadata-intent"
	StepDateraCreate   = "datera-create"
	StepACLAdd         = "acl-add"
	StepOnline         = "online"
	StepLogin          = "login"
	StepDeviceWait     = "device-wait"
	StepFormat         = "format"
	StepMountGlobal    = "mount-global"
	StepBind           = "bind"
	StepMetadataWrite  = "metadata-write"

	StepUnmountBind    = "unmount-bind"
	StepMetadataUpdate = "metadata-update"
	StepUnmountGlobal  = "unmount-global"
	StepLogout         = "logout"
	StepACLRemove      = "acl-remove"
	StepMetadataRemove = "metadata-remove"
)

// MountSteps and UnmountSteps list the crash points in the order they are passed.
var (
	MountSteps = []string{StepMetadataIntent, StepDateraCreate, StepACLAdd, StepOnline, StepLogin,
		StepDeviceWait, StepFormat, StepMountGlobal, StepBind, StepMetadataWrite}
	UnmountSteps = []string{StepUnmountBind, StepMetadataUpdate, StepUnmountGlobal, StepLogout,
		StepACLRemove, StepMetadataRemove}
)

// crashAt returns the crash hook for the step named in the environment.
func crashAt(step string) func(string) {
	if step == "" {
		return func(string) {}
	}
	return func(at string) {
		if at == step {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}
}
