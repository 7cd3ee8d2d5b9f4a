// Starts Swagger UI on /docs. A file rather than the inline script FastAPI's page carries, so
// that /docs runs under the server's Content-Security-Policy (script-src 'self').
(function () {
  "use strict";
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    filter: true, // a box that narrows 166 operations to the tags matching what is typed
    validatorUrl: null, // no badge from validator.swagger.io: it would send it our document's URL
    showExtensions: true,
    showCommonExtensions: true,
    presets: [SwaggerUIBundle.presets.apis],
  });
})();
