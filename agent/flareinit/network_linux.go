package flareinit

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
)

// Lease is the network configuration DHCP gave.
type Lease struct {
	Interface string
	Address   *net.IPNet
	Router    net.IP
	DNS       []net.IP
}

// bringUpLoopback makes lo usable (the firewall allows it).
func bringUpLoopback() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("network: lo: %w", err)
	}
	return netlink.LinkSetUp(lo)
}

// dhcp configures the first ethernet link with DHCPv4: address, default
// route. The client uses a packet socket, so it works before any address
// exists and is not subject to the IP firewall.
func dhcp(ctx context.Context, wait time.Duration) (*Lease, error) {
	var link netlink.Link
	deadline := time.Now().Add(wait)
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, fmt.Errorf("network: list links: %w", err)
		}
		for _, l := range links {
			a := l.Attrs()
			if l.Type() == "device" && a.Name != "lo" && len(a.HardwareAddr) == 6 && !strings.HasPrefix(a.Name, "sit") {
				link = l
				break
			}
		}
		if link != nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if link == nil {
		return nil, fmt.Errorf("network: no ethernet interface appeared within %s (is virtio_net loaded and a NIC attached?)", wait)
	}
	name := link.Attrs().Name
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("network: %s up: %w", name, err)
	}
	c, err := nclient4.New(name, nclient4.WithTimeout(3*time.Second), nclient4.WithRetry(5))
	if err != nil {
		return nil, fmt.Errorf("network: DHCP on %s: %w", name, err)
	}
	defer c.Close()
	lease, err := c.Request(ctx)
	if err != nil {
		return nil, fmt.Errorf("network: DHCP on %s: %w", name, err)
	}
	ack := lease.ACK
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ack.YourIPAddr.DefaultMask()
	}
	l := &Lease{Interface: name, Address: &net.IPNet{IP: ack.YourIPAddr.To4(), Mask: mask}, DNS: ack.DNS()}
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: l.Address}); err != nil {
		return nil, fmt.Errorf("network: %s address %s: %w", name, l.Address, err)
	}
	if r := ack.Router(); len(r) > 0 {
		l.Router = r[0]
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: l.Router}); err != nil {
			return nil, fmt.Errorf("network: default route via %s: %w", l.Router, err)
		}
	}
	return l, nil
}

// resolvConf is /etc/resolv.conf for the lease.
func resolvConf(dns []net.IP) string {
	var b strings.Builder
	for _, ip := range dns {
		fmt.Fprintf(&b, "nameserver %s\n", ip)
	}
	return b.String()
}
