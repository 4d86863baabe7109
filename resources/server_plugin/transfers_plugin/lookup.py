"""``POST /transfers/lookup``: the instances of some resources, with sizes and MD5s."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, List

from .errors import BAD_REQUEST, UNKNOWN_RESOURCE, PluginError

_PLURAL = {"Patient": "patients", "Study": "studies", "Series": "series"}


class Lookup:
    def __init__(self, api: Any, wire: Any, options: Any, originator: str) -> None:
        self.api = api
        self.wire = wire
        self.options = options
        self.originator = originator

    def _get_json(self, uri: str, what: str) -> Any:
        try:
            return json.loads(self.api.RestApiGet(uri))
        except self.api.OrthancException:
            raise PluginError(UNKNOWN_RESOURCE, "lookup: unknown %s" % what)

    def instance_ids(self, resources: List[Dict[str, str]], check_instances: bool = True) -> List[str]:
        """``check_instances``: ask for each instance-level resource that it
        exists (off when the caller reads each one's attachment anyway)."""
        ids: List[str] = []
        for resource in resources:
            level, rid = resource["Level"], resource["ID"]
            what = "%s %s" % (level.lower(), rid)
            if level == "Instance":
                if check_instances:
                    self._get_json("/instances/%s" % rid, what)
                ids.append(rid)
            else:
                children = self._get_json("/%s/%s/instances" % (_PLURAL[level], rid), what)
                ids.extend(child["ID"] for child in children)
        return sorted(set(ids))

    def info(self, instance_id: str) -> Any:
        attachment = self._get_json("/instances/%s/attachments/dicom/info" % instance_id,
                                    "instance %s" % instance_id)
        size = attachment.get("UncompressedSize")
        md5 = attachment.get("UncompressedMD5")
        if not isinstance(md5, str) or len(md5) != 32:
            # StoreMD5ForAttachments is off: hash the file as served.
            data = self.api.RestApiGet("/instances/%s/file" % instance_id)
            md5, size = hashlib.md5(data).hexdigest(), len(data)
        return self.wire.InstanceInfo(instance_id, int(size), md5)

    def answer(self, body: Any) -> Dict[str, Any]:
        resources = self.wire.parse_resources(body, "lookup")
        if len(resources) > self.options.max_lookup_resources:
            raise PluginError(BAD_REQUEST, "lookup: %d resources asked, at most %d (MaxLookupResources)"
                              % (len(resources), self.options.max_lookup_resources), http_status=413)
        # info() fails the same way for an unknown instance: one in-process
        # call per instance instead of two (the check before a push commit
        # and the final verification ask for thousands).
        infos = [self.info(i) for i in self.instance_ids(resources, check_instances=False)]
        return self.wire.build_lookup_answer(infos, self.originator)
