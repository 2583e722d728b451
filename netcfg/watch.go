package netcfg

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mdlayher/netlink"
	vnl "github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// WatchTable calls fn each time table inet tgtun is deleted (`nft flush ruleset`, `fw4
// flush`, or Apply replacing it, which fn must take calmly), from nftables' own change
// notifications, until ctx is done. It lets the daemon rebuild at once instead of at its
// next periodic check. It returns nil when ctx is done, or why the notifications stopped.
//
// It reads the nftables multicast group itself: google/nftables' Monitor delivers its
// events only at the end of a generation (NFT_MSG_NEWGEN), which its own filter drops
// unless every kind of event is subscribed, set elements included (thousands per list
// update). Here only DELTABLE messages are parsed, by name.
func WatchTable(ctx context.Context, fn func()) error {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return fmt.Errorf("nftables notifications: %w", err)
	}
	defer c.Close()
	if err := c.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		return fmt.Errorf("nftables notifications: join group: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	delTable := netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_DELTABLE)
	for {
		msgs, err := c.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if isNoBufs(err) {
				fn() // notifications were lost: one of them may have been ours
				continue
			}
			return fmt.Errorf("nftables notifications: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type == delTable && isOurTable(m.Data) {
				fn()
			}
		}
	}
}

func isNoBufs(err error) bool {
	var oe *netlink.OpError
	return errors.As(err, &oe) && oe.Err == unix.ENOBUFS
}

// isOurTable tells whether a table message (struct nfgenmsg, then attributes) names
// table inet tgtun.
func isOurTable(b []byte) bool {
	if len(b) < 4 || b[0] != unix.NFPROTO_INET {
		return false
	}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return false
	}
	for ad.Next() {
		if ad.Type() == unix.NFTA_TABLE_NAME {
			return ad.String() == TableName
		}
	}
	return false
}

// WatchLinks calls fn with the name of each network device the kernel reports created,
// deleted or changed (up, down, renamed: RTM_NEWLINK and RTM_DELLINK of the link group),
// until ctx is done; fn("") means notifications were lost (the socket overflowed) and
// any device may have changed. It lets the daemon follow an interface proxy's device
// that netifd deleted and created again at once, instead of at its next health round.
// It subscribes again after a lost socket and returns nil when ctx is done, or why it
// could not subscribe.
func WatchLinks(ctx context.Context, fn func(name string)) error {
	for {
		ch := make(chan vnl.LinkUpdate, 64)
		done := make(chan struct{})
		if err := vnl.LinkSubscribeWithOptions(ch, done, vnl.LinkSubscribeOptions{ErrorCallback: func(error) {}}); err != nil {
			return fmt.Errorf("link notifications: %w", err)
		}
		lost := false
		for !lost {
			select {
			case <-ctx.Done():
				close(done)
				for range ch { // the receiver ends when its socket closes
				}
				return nil
			case u, ok := <-ch:
				if !ok {
					lost = true
					break
				}
				fn(u.Link.Attrs().Name)
			}
		}
		close(done)
		fn("")
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// WatchRouting calls fn when the kernel reports a deleted policy rule, route or device
// address, or any change of a device (up, down, deleted), IPv4 and IPv6, until ctx is
// done; also when notifications were lost (the socket overflowed). Another program
// removing part of tgtun's state (`ip rule del`, `ip route flush table`, `ip link set
// tgtun0 down`) is then noticed at once, and the daemon needs no frequent periodic check
// (a router's core is shared with everything else it does). fn only says "look": the
// caller checks what is missing. It returns nil when ctx is done, or why it could not
// subscribe.
func WatchRouting(ctx context.Context, fn func()) error {
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		return fmt.Errorf("routing notifications: %w", err)
	}
	defer c.Close()
	for _, g := range []uint32{unix.RTNLGRP_LINK, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV6_IFADDR,
		unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE, unix.RTNLGRP_IPV4_RULE, unix.RTNLGRP_IPV6_RULE} {
		if err := c.JoinGroup(g); err != nil {
			return fmt.Errorf("routing notifications: join group %d: %w", g, err)
		}
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	for {
		msgs, err := c.Receive()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if isNoBufs(err) {
				fn()
				continue
			}
			return fmt.Errorf("routing notifications: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.RTM_DELRULE, unix.RTM_DELROUTE, unix.RTM_DELADDR, unix.RTM_NEWLINK, unix.RTM_DELLINK:
				fn()
			}
		}
	}
}
