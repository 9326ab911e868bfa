# OpenWrt package recipe for acp (included by ./Makefile when TOPDIR is set).
# Status: foundation draft. The feed layout, procd/ubus/LuCI parts and a build in a real
# OpenWrt tree belong to the OpenWrt-integration issue; no OpenWrt SDK is reachable here.
include $(TOPDIR)/rules.mk

PKG_NAME:=acp
PKG_VERSION:=0.1.0
PKG_RELEASE:=1
PKG_LICENSE:=GPL-2.0-only
PKG_MAINTAINER:=acp-openwrt developers

PYTHON3_PKG_BUILD:=1

include $(INCLUDE_DIR)/package.mk
include $(TOPDIR)/feeds/packages/lang/python/python3-package.mk

define Package/acp
  SECTION:=net
  CATEGORY:=Network
  TITLE:=Autonomic Control Plane node (RFC 8994)
  DEPENDS:=+python3-light +python3-asyncio +python3-logging +python3-pyroute2 \
	+python3-cryptography +python3-cbor2 +strongswan-charon +strongswan-mod-vici \
	+strongswan-mod-kernel-netlink +kmod-xfrm-interface
endef

define Package/acp/description
  Joins the box to an RFC 8994 Autonomic Control Plane: BRSKI enrolment, DULL GRASP
  neighbour discovery, IKEv2/IPsec secure channels and RPL routing, with no configuration.
endef

define Package/acp/conffiles
/etc/config/acp
endef

define Py3Package/acp/install
	$(INSTALL_DIR) $(1)/usr/sbin $(1)/etc/config
	$(INSTALL_BIN) $(PKG_INSTALL_DIR)/usr/bin/acpd $(PKG_INSTALL_DIR)/usr/bin/acpctl $(1)/usr/sbin/
	$(INSTALL_CONF) ./files/acp.config $(1)/etc/config/acp
endef

$(eval $(call Py3Package,acp))
$(eval $(call BuildPackage,acp))
$(eval $(call BuildPackage,acp-src))
