// Package netcfg is the kernel side of tgtun's data path: the TUN device, the
// policy-routing rules and routes that steer marked packets into it, and the
// nftables table that marks the connections to tunnel.
//
// Everything acts on the network namespace of the calling process.
package netcfg

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"time"
)

// Defaults applied by Spec when a field is left zero.
var (
	DefaultTunAddr4 = netip.MustParsePrefix("169.254.74.70/32")
)

const (
	DefaultMTU        = 1500
	DefaultTxQueueLen = 1000
)

// TableName is the name of the nftables table (family inet) tgtun owns.
const TableName = "tgtun"

// Spec is the wanted kernel state.
type Spec struct {
	TunName    string
	MTU        int          // DefaultMTU when 0
	TunAddr4   netip.Prefix // DefaultTunAddr4 when invalid (zero)
	TxQueueLen int          // DefaultTxQueueLen when 0

	LANIfaces     []string // packets entering here are candidates for marking
	RouterTraffic bool     // also mark the router's own new connections (output chain)
	IPv6          bool

	Mark       uint32 // M: set on tunnelled connections and their packets
	Mask       uint32 // bits of the mark tgtun owns; Mark when 0
	BypassMark uint32 // carried by the daemon's own sockets; the output chain skips it
	Table      int    // routing table holding "default dev <tun>"
	// RulePriority P: "fwmark M/Mask lookup Table" sits at P, "fwmark M/Mask ipproto
	// tcp lookup Table+1" at P-1 (with TProxyPort), "iif <tun> lookup main" at P-2.
	RulePriority int

	// TProxyPort, when not 0, keeps TCP on the kernel's stack: new TCP connections to
	// targets go to the daemon's transparent listener on 127.0.0.1:TProxyPort (and
	// [::1]:TProxyPort) through nftables' tproxy, delivered locally by "priority P-1
	// fwmark M/Mask ipproto tcp lookup T+1" (tproxy.go); only UDP goes into the TUN.
	// 0: every marked packet goes into the TUN.
	TProxyPort uint16

	// Block keeps fail_mode block when nothing else does: table T holds an unreachable
	// default of the lowest preference, so marked packets are refused, never sent
	// directly, while the TUN's route is missing (the daemon died, a rebuild failed).
	Block bool

	Targets4, Targets6 []netip.Prefix // destinations to tunnel
	Bypass             []netip.Prefix // never marked: the proxy servers' addresses

	// DomainTimeout is the lifetime of an address dnsmasq adds to the domain sets
	// (SetDst4DNS, SetDst6DNS); DefaultDomainTimeout when 0.
	DomainTimeout time.Duration
	// Include, when not empty, are the only source devices whose connections are
	// tunnelled; Exclude are never tunnelled.
	Include, Exclude Devices
}

// Validate checks spec as Apply would, without touching the kernel: a reload validates
// the new state before it tears the running one down.
func (s Spec) Validate() error {
	_, err := s.withDefaults()
	return err
}

// withDefaults returns a copy of s with zero fields defaulted, and checks it.
func (s Spec) withDefaults() (Spec, error) {
	if s.MTU == 0 {
		s.MTU = DefaultMTU
	}
	if !s.TunAddr4.IsValid() {
		s.TunAddr4 = DefaultTunAddr4
	}
	if s.TxQueueLen == 0 {
		s.TxQueueLen = DefaultTxQueueLen
	}
	if s.Mask == 0 {
		s.Mask = s.Mark
	}
	return s, s.validate()
}

func (s Spec) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if s.TunName == "" || len(s.TunName) > 15 {
		bad("tun name %q: must be 1 to 15 characters", s.TunName)
	}
	if s.MTU < 576 || s.MTU > 65535 {
		bad("mtu %d: must be 576..65535", s.MTU)
	}
	if s.IPv6 && s.MTU < 1280 {
		bad("mtu %d: IPv6 needs at least 1280", s.MTU)
	}
	if !s.TunAddr4.Addr().Is4() {
		bad("tun address %s: must be IPv4", s.TunAddr4)
	}
	if s.TxQueueLen < 1 {
		bad("txqueuelen %d: must be positive", s.TxQueueLen)
	}
	for _, name := range s.LANIfaces {
		if name == "" || len(name) > 15 {
			bad("lan interface %q: must be 1 to 15 characters", name)
		}
	}
	if s.Mark == 0 {
		bad("mark: must not be 0")
	}
	if s.Mark&^s.Mask != 0 {
		bad("mark %#x: has bits outside mask %#x", s.Mark, s.Mask)
	}
	if s.BypassMark == 0 {
		bad("bypass mark: must not be 0")
	} else if s.BypassMark&s.Mask == s.Mark {
		// The daemon's own sockets would match "fwmark M/Mask" and loop into the TUN.
		bad("bypass mark %#x: matches mark %#x/%#x", s.BypassMark, s.Mark, s.Mask)
	}
	switch {
	case s.Table <= 0 || int64(s.Table) > math.MaxInt32:
		bad("route table %d: must be positive", s.Table)
	case s.Table == 253 || s.Table == 254 || s.Table == 255:
		bad("route table %d: reserved (default, main, local)", s.Table)
	}
	if s.RulePriority < 3 || s.RulePriority > 32765 {
		bad("rule priority %d: must be 3..32765 (P-1 and P-2 are used too, 0 and 32766 belong to local and main)", s.RulePriority)
	}
	if t := tcpTable(s); s.TProxyPort != 0 && (t <= 0 || t == 253 || t == 254 || t == 255 || int64(t) > math.MaxInt32) {
		bad("route table %d: table %d (the next one, for TCP) is reserved or out of range", s.Table, t)
	}
	if _, err := splitFamily(s.Targets4, true); err != nil {
		bad("targets4: %w", err)
	}
	if _, err := splitFamily(s.Targets6, false); err != nil {
		bad("targets6: %w", err)
	}
	if !s.IPv6 && len(s.Targets6) > 0 {
		bad("targets6: %d prefixes given with IPv6 off", len(s.Targets6))
	}
	if err := s.Include.validate(); err != nil {
		bad("include: %w", err)
	}
	if err := s.Exclude.validate(); err != nil {
		bad("exclude: %w", err)
	}
	for _, p := range s.Bypass {
		if !p.IsValid() {
			bad("bypass: invalid prefix %v", p)
		}
	}
	return errors.Join(errs...)
}
