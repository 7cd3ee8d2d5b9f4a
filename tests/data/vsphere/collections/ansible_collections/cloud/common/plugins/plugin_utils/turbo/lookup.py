# A stand-in of ours (Apache-2.0, virtcenter) for cloud.common's TurboLookupBase, which
# vmware.vmware_rest's *_moid lookups import. cloud.common is not on PyPI and this project's
# machines reach no other registry of Ansible collections, so the test cannot install it. The
# real base sends each lookup to cloud.common's "turbo" daemon, which runs the plugin's
# coroutine ``_run`` there on one long-lived event loop (the collection keeps its HTTP sessions
# across lookups, bound to that loop); this one runs the same coroutine in the calling process,
# on one event loop kept for the process. Every request, path walk and filter is
# vmware.vmware_rest's own code (plugins/plugin_utils/lookup.py of the collection).
import asyncio

from ansible.plugins.lookup import LookupBase

_LOOP = None


class TurboLookupBase(LookupBase):
    def run_on_daemon(self, terms, variables=None, **kwargs):
        global _LOOP
        if _LOOP is None:
            _LOOP = asyncio.new_event_loop()
        return _LOOP.run_until_complete(self._run(terms, variables, **kwargs))
