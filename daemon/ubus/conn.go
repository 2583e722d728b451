package ubus

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Socket paths tried, in order, when none is given: OpenWrt's current place, then the
// one older releases used.
const (
	DefaultSocket = "/var/run/ubus/ubus.sock"
	LegacySocket  = "/var/run/ubus.sock"
)

// writeTimeout bounds a write to ubusd, so a wedged ubusd cannot hang a handler forever.
const writeTimeout = 10 * time.Second

// ErrClosed is returned for calls on a connection closed by Close.
var ErrClosed = errors.New("ubus connection closed")

// Conn is one connection to ubusd. It can call other objects and serve its own objects
// at the same time; all methods are safe for concurrent use.
type Conn struct {
	nc   net.Conn
	path string
	id   uint32
	log  *slog.Logger

	wmu sync.Mutex // serialises writes, so DATA and STATUS of one reply stay together

	mu      sync.Mutex
	seq     uint16
	calls   map[uint16]*call
	objects map[uint32]*object
	err     error // why the connection ended; set once

	ctx    context.Context // ends with the connection; parent of handler contexts
	cancel context.CancelFunc
	done   chan struct{} // closed when the read loop has finished
}

// call is one request waiting for its STATUS.
type call struct {
	data   []*Message
	onData func(*Message) // run by the read loop as each DATA arrives
	status Status
	err    error
	done   chan struct{}
}

// object is a registered object as its connection dispatches to it.
type object struct {
	name    string
	methods map[string]*Method
}

// Dial connects to ubusd at path (DefaultSocket, then LegacySocket, when path is empty)
// and waits for its HELLO.
func Dial(ctx context.Context, path string) (*Conn, error) {
	return dial(ctx, path, slog.Default())
}

func dial(ctx context.Context, path string, log *slog.Logger) (*Conn, error) {
	if path != "" {
		return dialPath(ctx, path, log)
	}
	c, err := dialPath(ctx, DefaultSocket, log)
	if err == nil {
		return c, nil
	}
	c, err2 := dialPath(ctx, LegacySocket, log)
	if err2 == nil {
		return c, nil
	}
	return nil, fmt.Errorf("%w; %w", err, err2)
}

func dialPath(ctx context.Context, path string, log *slog.Logger) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connect to ubus at %s: %w", path, err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(writeTimeout)
	}
	_ = nc.SetReadDeadline(deadline)
	r := bufio.NewReader(nc)
	hello, err := ReadMessage(r)
	if err == nil && hello.Type != MsgHello {
		err = fmt.Errorf("got %s instead of HELLO", hello.Type)
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("ubus at %s: read HELLO: %w", path, err)
	}
	_ = nc.SetReadDeadline(time.Time{})
	c := &Conn{
		nc:      nc,
		path:    path,
		id:      hello.Peer,
		log:     log,
		calls:   make(map[uint16]*call),
		objects: make(map[uint32]*object),
		done:    make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.readLoop(r)
	return c, nil
}

// ID is the client id ubusd assigned in its HELLO.
func (c *Conn) ID() uint32 { return c.id }

// Path is the socket the connection was made to.
func (c *Conn) Path() string { return c.path }

// Done is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err tells why the connection ended (io.EOF when ubusd closed it); nil while it is up.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the connection and fails the calls still waiting.
func (c *Conn) Close() error {
	c.end(ErrClosed)
	<-c.done
	return nil
}

// end records why the connection ended (the first reason wins) and tears it down.
func (c *Conn) end(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	calls := c.calls
	c.calls = map[uint16]*call{}
	c.mu.Unlock()
	c.cancel()
	c.nc.Close()
	for _, cl := range calls {
		cl.err = err
		close(cl.done)
	}
}

func (c *Conn) readLoop(r *bufio.Reader) {
	defer close(c.done)
	for {
		m, err := ReadMessage(r)
		if err != nil {
			c.end(err)
			return
		}
		c.dispatch(m)
	}
}

func (c *Conn) dispatch(m *Message) {
	switch m.Type {
	case MsgData, MsgStatus:
		c.complete(m)
	case MsgInvoke:
		c.invoked(m)
	default:
		// HELLO again, NOTIFY about subscribers, UNSUBSCRIBE: nothing to do for us.
		c.log.Debug("ubus: ignoring message", "type", m.Type, "seq", m.Seq)
	}
}

// complete hands a DATA or STATUS to the request with its sequence number.
func (c *Conn) complete(m *Message) {
	c.mu.Lock()
	cl := c.calls[m.Seq]
	if cl == nil {
		c.mu.Unlock()
		c.log.Debug("ubus: reply to no pending request", "type", m.Type, "seq", m.Seq)
		return
	}
	if m.Type == MsgData {
		cl.data = append(cl.data, m)
		hook := cl.onData
		c.mu.Unlock()
		if hook != nil {
			hook(m)
		}
		return
	}
	delete(c.calls, m.Seq)
	c.mu.Unlock()
	cl.status, cl.err = m.Status()
	close(cl.done)
}

// request sends m with a fresh sequence number and waits for its STATUS.
func (c *Conn) request(ctx context.Context, m *Message, onData func(*Message)) ([]*Message, Status, error) {
	cl := &call{onData: onData, done: make(chan struct{})}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, 0, fmt.Errorf("ubus %s: %w", m.Type, err)
	}
	for {
		c.seq++
		if _, busy := c.calls[c.seq]; !busy {
			break
		}
	}
	m.Seq = c.seq
	c.calls[m.Seq] = cl
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		if c.calls[m.Seq] == cl {
			delete(c.calls, m.Seq)
		}
		c.mu.Unlock()
	}
	if err := c.send(m); err != nil {
		forget()
		return nil, 0, err
	}
	select {
	case <-cl.done:
		if cl.err != nil {
			return nil, 0, fmt.Errorf("ubus %s: %w", m.Type, cl.err)
		}
		c.mu.Lock()
		data := cl.data
		c.mu.Unlock()
		return data, cl.status, nil
	case <-ctx.Done():
		forget()
		return nil, 0, fmt.Errorf("ubus %s: %w", m.Type, ctx.Err())
	}
}

// send writes messages in one write.
func (c *Conn) send(msgs ...*Message) error {
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
	if _, err := c.nc.Write(buf); err != nil {
		c.end(err)
		return fmt.Errorf("write to ubus: %w", err)
	}
	return nil
}

// ObjectInfo describes an object as LOOKUP reports it.
type ObjectInfo struct {
	Path    string
	ID      uint32
	TypeID  uint32
	Methods []Signature
}

// Signature is a method's name and argument policy as published on the bus.
type Signature struct {
	Name string
	Args []Arg
}

// Lookup lists the objects at path ("" for all, "prefix*" for a prefix), with their
// method signatures. No match is a *StatusError with StatusNotFound.
func (c *Conn) Lookup(ctx context.Context, path string) ([]ObjectInfo, error) {
	data, status, err := c.request(ctx, lookupMessage(path), nil)
	if err != nil {
		return nil, err
	}
	if status != StatusOK {
		return nil, fmt.Errorf("ubus lookup %q: %w", path, &StatusError{Code: status})
	}
	out := make([]ObjectInfo, 0, len(data))
	for _, d := range data {
		info, err := parseObjectInfo(d)
		if err != nil {
			return nil, fmt.Errorf("ubus lookup %q: %w", path, err)
		}
		out = append(out, info)
	}
	return out, nil
}

func lookupMessage(path string) *Message {
	m := &Message{Type: MsgLookup}
	if path != "" {
		m.Attrs = []Attr{StringAttr(AttrObjPath, path)}
	}
	return m
}

func parseObjectInfo(m *Message) (ObjectInfo, error) {
	var info ObjectInfo
	var err error
	if info.Path, err = m.String(AttrObjPath); err != nil {
		return info, err
	}
	if info.ID, err = m.Uint32(AttrObjID); err != nil {
		return info, err
	}
	if info.TypeID, err = m.Uint32(AttrObjType); err != nil {
		return info, err
	}
	sig, err := m.Table(AttrSignature)
	if err != nil {
		return info, err
	}
	info.Methods, err = parseSignature(sig)
	return info, err
}

// parseSignature reads the methods of a SIGNATURE: one table per method, holding an
// int32 blobmsg type per argument.
func parseSignature(sig Table) ([]Signature, error) {
	out := make([]Signature, 0, len(sig))
	for _, f := range sig {
		args, ok := f.Value.(Table)
		if !ok {
			return nil, fmt.Errorf("signature of method %q is a %T, not a table", f.Name, f.Value)
		}
		s := Signature{Name: f.Name, Args: make([]Arg, 0, len(args))}
		for _, a := range args {
			t, ok := a.Value.(int32)
			if !ok {
				return nil, fmt.Errorf("method %q argument %q: type is a %T, not an int32", f.Name, a.Name, a.Value)
			}
			s.Args = append(s.Args, Arg{Name: a.Name, Type: Type(t)})
		}
		out = append(out, s)
	}
	return out, nil
}

// signatureTable is the SIGNATURE of methods, in their order.
func signatureTable(methods []Method) Table {
	sig := make(Table, 0, len(methods))
	for _, m := range methods {
		args := make(Table, 0, len(m.Policy))
		for _, a := range m.Policy {
			args = append(args, Field{Name: a.Name, Value: int32(a.Type)})
		}
		sig = append(sig, Field{Name: m.Name, Value: args})
	}
	return sig
}

// Invoke calls method on the object at path, like `ubus call`: a lookup, then the call.
func (c *Conn) Invoke(ctx context.Context, path, method string, args Table) (Table, error) {
	objs, err := c.Lookup(ctx, path)
	if err != nil {
		return nil, err
	}
	if len(objs) != 1 {
		return nil, fmt.Errorf("ubus lookup %q: %d objects match", path, len(objs))
	}
	return c.InvokeID(ctx, objs[0].ID, method, args)
}

// InvokeID calls method on the object with id. It returns the first DATA reply (or an
// empty table when there was none). A non-zero status is a *StatusError whose Msg is the
// reply's "error" member when it has one; the reply is returned with it.
func (c *Conn) InvokeID(ctx context.Context, id uint32, method string, args Table) (Table, error) {
	m, err := invokeMessage(id, method, args)
	if err != nil {
		return nil, err
	}
	data, status, err := c.request(ctx, m, nil)
	if err != nil {
		return nil, err
	}
	reply := Table{}
	if len(data) > 0 {
		if reply, err = data[0].Table(AttrData); err != nil {
			return nil, fmt.Errorf("ubus call %s: reply: %w", method, err)
		}
	}
	if status != StatusOK {
		se := &StatusError{Code: status}
		if msg, ok := reply.Get("error"); ok {
			se.Msg, _ = msg.(string)
		}
		return reply, fmt.Errorf("ubus call %s: %w", method, se)
	}
	return reply, nil
}

func invokeMessage(id uint32, method string, args Table) (*Message, error) {
	data, err := TableAttr(AttrData, args)
	if err != nil {
		return nil, fmt.Errorf("ubus call %s: arguments: %w", method, err)
	}
	return &Message{
		Type:  MsgInvoke,
		Peer:  id,
		Attrs: []Attr{Uint32Attr(AttrObjID, id), StringAttr(AttrMethod, method), data},
	}, nil
}

// AddObject registers an object named name with its methods and serves calls to it on
// this connection until the connection ends. It returns the object id ubusd assigned.
func (c *Conn) AddObject(ctx context.Context, name string, methods ...Method) (uint32, error) {
	obj, err := newObject(name, methods)
	if err != nil {
		return 0, err
	}
	m, err := addObjectMessage(name, methods)
	if err != nil {
		return 0, err
	}
	var id uint32
	var idErr error
	// Register as soon as the id arrives: an INVOKE may follow before our STATUS is read.
	onData := func(d *Message) {
		if id, idErr = d.Uint32(AttrObjID); idErr == nil {
			c.mu.Lock()
			c.objects[id] = obj
			c.mu.Unlock()
		}
	}
	_, status, err := c.request(ctx, m, onData)
	if err != nil {
		return 0, fmt.Errorf("add ubus object %q: %w", name, err)
	}
	if status != StatusOK {
		return 0, fmt.Errorf("add ubus object %q: %w", name, &StatusError{Code: status})
	}
	if idErr != nil {
		return 0, fmt.Errorf("add ubus object %q: reply: %w", name, idErr)
	}
	if id == 0 {
		return 0, fmt.Errorf("add ubus object %q: no object id in the reply", name)
	}
	return id, nil
}

func addObjectMessage(name string, methods []Method) (*Message, error) {
	sig, err := TableAttr(AttrSignature, signatureTable(methods))
	if err != nil {
		return nil, fmt.Errorf("add ubus object %q: %w", name, err)
	}
	return &Message{Type: MsgAddObject, Attrs: []Attr{StringAttr(AttrObjPath, name), sig}}, nil
}

// invoked handles an INVOKE that ubusd forwarded to one of our objects.
func (c *Conn) invoked(m *Message) {
	objID, err := m.Uint32(AttrObjID)
	if err != nil {
		c.log.Debug("ubus: malformed INVOKE", "err", err)
		return
	}
	if a, ok := m.Get(AttrNoReply); ok && len(a.Data) == 1 && a.Data[0] != 0 {
		// A notification to a subscriber; we subscribe to nothing.
		return
	}
	c.mu.Lock()
	obj := c.objects[objID]
	c.mu.Unlock()
	if obj == nil {
		// Not from the read loop itself: a write may block until ubusd reads.
		go c.reply(m, objID, nil, StatusNotFound)
		return
	}
	go c.serveInvoke(obj, objID, m)
}

func (c *Conn) serveInvoke(obj *object, objID uint32, m *Message) {
	name, err := m.String(AttrMethod)
	if err != nil {
		c.reply(m, objID, nil, StatusInvalidArgument)
		return
	}
	meth := obj.methods[name]
	if meth == nil {
		// As libubus does: the status alone.
		c.reply(m, objID, nil, StatusMethodNotFound)
		return
	}
	args, err := m.Table(AttrData)
	if err == nil {
		err = meth.check(args)
	}
	if err != nil {
		c.reply(m, objID, errorTable(err.Error()), StatusInvalidArgument)
		return
	}
	res, stack, err := meth.call(c.ctx, args)
	if stack != nil {
		c.log.Error("ubus method panicked", "object", obj.name, "method", name, "err", err, "stack", string(stack))
	}
	if err != nil {
		code := StatusOf(err)
		var data Table
		if msg := err.Error(); msg != code.Text() {
			data = errorTable(msg)
		}
		c.log.Debug("ubus: method failed", "object", obj.name, "method", name, "status", code, "err", err)
		c.reply(m, objID, data, code)
		return
	}
	c.reply(m, objID, res, StatusOK)
}

func errorTable(msg string) Table { return Table{{Name: "error", Value: msg}} }

// reply answers an INVOKE: DATA (when there is data) then STATUS, in one write.
func (c *Conn) reply(inv *Message, objID uint32, data Table, status Status) {
	msgs, err := replyMessages(inv, objID, data, status)
	if err != nil {
		c.log.Warn("ubus: cannot encode reply", "err", err)
		msgs, _ = replyMessages(inv, objID, errorTable("reply too large or not encodable"), StatusUnknownError)
	}
	if err := c.send(msgs...); err != nil {
		c.log.Debug("ubus: reply not sent", "err", err)
	}
}

// replyMessages builds the answer to inv as the trace shows libubus does: DATA with OBJID
// and DATA, STATUS with STATUS and OBJID, both with the invoker's seq and peer.
func replyMessages(inv *Message, objID uint32, data Table, status Status) ([]*Message, error) {
	var msgs []*Message
	if data != nil {
		d, err := TableAttr(AttrData, data)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, &Message{Type: MsgData, Seq: inv.Seq, Peer: inv.Peer,
			Attrs: []Attr{Uint32Attr(AttrObjID, objID), d}})
	}
	msgs = append(msgs, &Message{Type: MsgStatus, Seq: inv.Seq, Peer: inv.Peer,
		Attrs: []Attr{Uint32Attr(AttrStatus, uint32(status)), Uint32Attr(AttrObjID, objID)}})
	return msgs, nil
}

// isEOF tells whether err means the peer closed the connection.
func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
