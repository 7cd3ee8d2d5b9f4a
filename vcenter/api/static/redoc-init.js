// Starts Redoc on /redoc. A file rather than an inline script, so that /redoc runs under the
// server's Content-Security-Policy; Redoc gives the styles it inserts at run time the nonce of
// this response (the page's csp-nonce meta element), which the policy of /redoc allows.
(function () {
  "use strict";
  const root = document.getElementById("redoc-root");
  const nonce = document.querySelector('meta[property="csp-nonce"]').nonce;
  Redoc.init(root.dataset.openapiUrl, { nonce: nonce }, root);
})();
