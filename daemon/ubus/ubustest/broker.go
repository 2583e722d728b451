// Package ubustest provides Broker, a ubus message broker for the unit tests of the wire
// format in daemon/ubus (blobmsg, messages, the client's and the object server's
// exchanges, reconnects), which run without root and without OpenWrt's programs, also
// under qemu on big-endian MIPS. It answers the way ubusd does: the HELLO with a client
// id, ADD_OBJECT/REMOVE_OBJECT with object and type ids, LOOKUP with signatures, INVOKE
// forwarded to the object's connection (with the caller's user and group) and the
// object's DATA and STATUS relayed back, following the captured traces in ../testdata.
//
// It is not the router's bus: every test that means the bus on the router (the e2e tests
// of the tgtun object, ubusd restarts, what LuCI calls) runs OpenWrt's real ubusd and
// `ubus` CLI (e2e/openwrt). It leaves out what tgtun does not use: ACLs, events,
// subscriptions, notifications and monitoring (those messages get INVALID_COMMAND).
package ubustest

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tgtun/tgtun/daemon/ubus"
)

// systemObjectMax is ubusd's UBUS_SYSTEM_OBJECT_MAX: ids below it are reserved.
const systemObjectMax = 1024

const writeTimeout = 10 * time.Second

// Broker is a running stand-in for ubusd on a unix socket.
type Broker struct {
	ln   *net.UnixListener
	path string
	wg   sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	ids     map[uint32]bool // every id in use: clients, objects, types
	clients map[uint32]*client
	objects map[uint32]*object
	paths   map[string]*object
	types   map[uint32]*objType
}

type client struct {
	id          uint32
	nc          net.Conn
	user, group string
	wmu         sync.Mutex
}

type object struct {
	id    uint32
	path  string // empty for an anonymous object (a subscriber)
	typ   *objType
	owner *client
}

type objType struct {
	id   uint32
	sig  []byte // the SIGNATURE payload as registered, sent back verbatim by LOOKUP
	refs int
}

// Listen starts a broker on a unix socket at path, replacing a stale socket file there.
func Listen(path string) (*Broker, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("ubus broker: listen on %s: %w", path, err)
	}
	b := &Broker{
		ln:      ln,
		path:    path,
		ids:     map[uint32]bool{},
		clients: map[uint32]*client{},
		objects: map[uint32]*object{},
		paths:   map[string]*object{},
		types:   map[uint32]*objType{},
	}
	b.wg.Add(1)
	go b.accept()
	return b, nil
}

// Path is the socket the broker listens on.
func (b *Broker) Path() string { return b.path }

// Close stops the broker: no more connections, every client disconnected (they see EOF,
// as when ubusd exits), the socket file removed.
func (b *Broker) Close() error {
	b.mu.Lock()
	b.closed = true
	for _, c := range b.clients {
		c.nc.Close()
	}
	b.mu.Unlock()
	err := b.ln.Close()
	b.wg.Wait()
	return err
}

// Objects lists the paths of the registered objects, sorted.
func (b *Broker) Objects() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.paths))
	for p := range b.paths {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

func (b *Broker) accept() {
	defer b.wg.Done()
	for {
		nc, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			nc.Close()
			return
		}
		c := &client{id: b.allocID(), nc: nc}
		b.clients[c.id] = c
		b.mu.Unlock()
		b.wg.Add(1)
		go b.serve(c)
	}
}

// allocID picks an unused random id above the reserved range, as ubusd does. b.mu held.
func (b *Broker) allocID() uint32 {
	for {
		id := rand.Uint32()
		if id >= systemObjectMax && !b.ids[id] {
			b.ids[id] = true
			return id
		}
	}
}

func (b *Broker) serve(c *client) {
	defer b.wg.Done()
	defer b.drop(c)
	c.user, c.group = peerNames(c.nc)
	if b.send(c, &ubus.Message{Type: ubus.MsgHello, Peer: c.id}) != nil {
		return
	}
	r := bufio.NewReader(c.nc)
	for {
		m, err := ubus.ReadMessage(r)
		if err != nil {
			return
		}
		b.handle(c, m)
	}
}

// drop forgets a client that went away, and its objects.
func (b *Broker) drop(c *client) {
	c.nc.Close()
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.clients, c.id)
	delete(b.ids, c.id)
	for _, o := range b.objects {
		if o.owner == c {
			b.removeObject(o)
		}
	}
}

// removeObject forgets an object and reports whether its type went with it. b.mu held.
func (b *Broker) removeObject(o *object) (typeGone bool) {
	delete(b.objects, o.id)
	delete(b.ids, o.id)
	if o.path != "" {
		delete(b.paths, o.path)
	}
	if o.typ != nil {
		o.typ.refs--
		if o.typ.refs == 0 {
			delete(b.types, o.typ.id)
			delete(b.ids, o.typ.id)
			return true
		}
	}
	return false
}

func (b *Broker) send(c *client, msgs ...*ubus.Message) error {
	var buf []byte
	for _, m := range msgs {
		var err error
		if buf, err = m.AppendBinary(buf); err != nil {
			return err
		}
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
	_, err := c.nc.Write(buf)
	return err
}

// reply builds a message answering req, with its seq and peer, as ubusd's replies carry.
func reply(req *ubus.Message, typ ubus.MsgType, attrs ...ubus.Attr) *ubus.Message {
	return &ubus.Message{Type: typ, Seq: req.Seq, Peer: req.Peer, Attrs: attrs}
}

// handle answers one message. Requests end with a STATUS unless they were forwarded.
func (b *Broker) handle(c *client, m *ubus.Message) {
	var data []*ubus.Message
	var status ubus.Status
	switch m.Type {
	case ubus.MsgPing:
		data = []*ubus.Message{reply(m, ubus.MsgData, m.Attrs...)}
	case ubus.MsgAddObject:
		data, status = b.addObject(c, m)
	case ubus.MsgRemoveObject:
		data, status = b.removeObjectMsg(c, m)
	case ubus.MsgLookup:
		data, status = b.lookup(m)
	case ubus.MsgInvoke:
		var forwarded bool
		if status, forwarded = b.invoke(c, m); forwarded {
			return
		}
	case ubus.MsgData, ubus.MsgStatus:
		b.relay(c, m)
		return
	default:
		status = ubus.StatusInvalidCommand
	}
	msgs := append(data, reply(m, ubus.MsgStatus, ubus.Uint32Attr(ubus.AttrStatus, uint32(status))))
	_ = b.send(c, msgs...)
}

func (b *Broker) addObject(c *client, m *ubus.Message) ([]*ubus.Message, ubus.Status) {
	var path string
	if _, ok := m.Get(ubus.AttrObjPath); ok {
		p, err := m.String(ubus.AttrObjPath)
		if err != nil || p == "" {
			return nil, ubus.StatusInvalidArgument
		}
		path = p
	}
	sigAttr, hasSig := m.Get(ubus.AttrSignature)
	if hasSig {
		sig, err := ubus.DecodeTable(sigAttr.Data)
		if err != nil {
			return nil, ubus.StatusInvalidArgument
		}
		for _, f := range sig {
			if _, ok := f.Value.(ubus.Table); !ok {
				return nil, ubus.StatusInvalidArgument
			}
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var typ *objType
	switch {
	case hasSig:
		typ = &objType{id: b.allocID(), sig: sigAttr.Data}
		b.types[typ.id] = typ
	default:
		if _, ok := m.Get(ubus.AttrObjType); ok {
			id, err := m.Uint32(ubus.AttrObjType)
			if typ = b.types[id]; err != nil || typ == nil {
				return nil, ubus.StatusInvalidArgument
			}
		}
	}
	if path != "" && b.paths[path] != nil {
		if typ != nil && typ.refs == 0 {
			delete(b.types, typ.id)
			delete(b.ids, typ.id)
		}
		return nil, ubus.StatusInvalidArgument
	}
	o := &object{id: b.allocID(), path: path, typ: typ, owner: c}
	b.objects[o.id] = o
	if path != "" {
		b.paths[path] = o
	}
	attrs := []ubus.Attr{ubus.Uint32Attr(ubus.AttrObjID, o.id)}
	if typ != nil {
		typ.refs++
		if hasSig {
			attrs = append(attrs, ubus.Uint32Attr(ubus.AttrObjType, typ.id))
		}
	}
	return []*ubus.Message{reply(m, ubus.MsgData, attrs...)}, ubus.StatusOK
}

func (b *Broker) removeObjectMsg(c *client, m *ubus.Message) ([]*ubus.Message, ubus.Status) {
	id, err := m.Uint32(ubus.AttrObjID)
	if err != nil {
		return nil, ubus.StatusInvalidArgument
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	o := b.objects[id]
	switch {
	case o == nil:
		return nil, ubus.StatusNotFound
	case o.owner != c:
		return nil, ubus.StatusPermissionDenied
	}
	typ := o.typ
	attrs := []ubus.Attr{ubus.Uint32Attr(ubus.AttrObjID, id)}
	if b.removeObject(o) {
		attrs = append(attrs, ubus.Uint32Attr(ubus.AttrObjType, typ.id))
	}
	return []*ubus.Message{reply(m, ubus.MsgData, attrs...)}, ubus.StatusOK
}

// lookup answers with one DATA per matching object that has a type: all objects without
// OBJPATH, a prefix match for "prefix*", else the exact path.
func (b *Broker) lookup(m *ubus.Message) ([]*ubus.Message, ubus.Status) {
	var match func(string) bool
	if _, ok := m.Get(ubus.AttrObjPath); !ok {
		match = func(string) bool { return true }
	} else {
		p, err := m.String(ubus.AttrObjPath)
		if err != nil || p == "" {
			return nil, ubus.StatusInvalidArgument
		}
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			match = func(s string) bool { return strings.HasPrefix(s, prefix) }
		} else {
			match = func(s string) bool { return s == p }
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var found []*object
	for p, o := range b.paths {
		if match(p) {
			found = append(found, o)
		}
	}
	if len(found) == 0 {
		if _, hasPath := m.Get(ubus.AttrObjPath); hasPath {
			return nil, ubus.StatusNotFound
		}
		return nil, ubus.StatusOK
	}
	slices.SortFunc(found, func(x, y *object) int { return strings.Compare(x.path, y.path) })
	var data []*ubus.Message
	for _, o := range found {
		if o.typ == nil {
			continue
		}
		data = append(data, reply(m, ubus.MsgData,
			ubus.StringAttr(ubus.AttrObjPath, o.path),
			ubus.Uint32Attr(ubus.AttrObjID, o.id),
			ubus.Uint32Attr(ubus.AttrObjType, o.typ.id),
			ubus.Attr{ID: ubus.AttrSignature, Data: o.typ.sig}))
	}
	return data, ubus.StatusOK
}

// invoke forwards a call to the object's connection, with the caller as peer. The
// object's answer comes back through relay; only failures here get a STATUS from us.
func (b *Broker) invoke(c *client, m *ubus.Message) (ubus.Status, bool) {
	id, err := m.Uint32(ubus.AttrObjID)
	if err != nil {
		return ubus.StatusInvalidArgument, false
	}
	method, err := m.String(ubus.AttrMethod)
	if err != nil {
		return ubus.StatusInvalidArgument, false
	}
	b.mu.Lock()
	o := b.objects[id]
	b.mu.Unlock()
	if o == nil {
		return ubus.StatusNotFound, false
	}
	fwd := &ubus.Message{Type: ubus.MsgInvoke, Seq: m.Seq, Peer: c.id, Attrs: []ubus.Attr{
		ubus.Uint32Attr(ubus.AttrObjID, id),
		ubus.StringAttr(ubus.AttrMethod, method),
	}}
	if c.user != "" {
		fwd.Attrs = append(fwd.Attrs, ubus.StringAttr(ubus.AttrUser, c.user))
	}
	if c.group != "" {
		fwd.Attrs = append(fwd.Attrs, ubus.StringAttr(ubus.AttrGroup, c.group))
	}
	if d, ok := m.Get(ubus.AttrData); ok {
		fwd.Attrs = append(fwd.Attrs, d)
	}
	_ = b.send(o.owner, fwd)
	return 0, true
}

// relay passes an object's DATA or STATUS to the caller named by its peer field, with the
// peer rewritten to the object id. Anything else is dropped silently, as ubusd does.
func (b *Broker) relay(c *client, m *ubus.Message) {
	id, err := m.Uint32(ubus.AttrObjID)
	if err != nil {
		return
	}
	need := ubus.AttrData
	if m.Type == ubus.MsgStatus {
		need = ubus.AttrStatus
	}
	if _, ok := m.Get(need); !ok {
		return
	}
	b.mu.Lock()
	o := b.objects[id]
	caller := b.clients[m.Peer]
	b.mu.Unlock()
	if o == nil || o.owner != c || caller == nil {
		return
	}
	fwd := *m
	fwd.Peer = id
	_ = b.send(caller, &fwd)
}

// peerNames finds the user and group of the process at the other end, which ubusd
// passes on with every INVOKE.
func peerNames(nc net.Conn) (string, string) {
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		return "", ""
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return "", ""
	}
	var cred *syscall.Ucred
	cerr := raw.Control(func(fd uintptr) {
		cred, err = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if err = errors.Join(cerr, err); err != nil {
		return "", ""
	}
	uid, gid := strconv.Itoa(int(cred.Uid)), strconv.Itoa(int(cred.Gid))
	userName, groupName := uid, gid
	if u, err := user.LookupId(uid); err == nil {
		userName = u.Username
	}
	if g, err := user.LookupGroupId(gid); err == nil {
		groupName = g.Name
	}
	return userName, groupName
}
