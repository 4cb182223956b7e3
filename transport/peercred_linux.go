package transport

import (
	"net"
	"syscall"
)

// peerCred reads the credentials of c's peer with getsockopt(SO_PEERCRED):
// for an accepted connection, the process that connected; for a dialled
// one, the process that called listen(2). The kernel records them when the
// connection is made, so the peer cannot fake them.
func peerCred(c *net.UnixConn) Peer {
	raw, err := c.SyscallConn()
	if err != nil {
		return Peer{}
	}
	var (
		cred    *syscall.Ucred
		credErr error
	)
	err = raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if err != nil || credErr != nil {
		return Peer{}
	}
	return Peer{Known: true, UID: int(cred.Uid), GID: int(cred.Gid), PID: int(cred.Pid)}
}
