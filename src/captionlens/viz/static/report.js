// captionlens report: the gallery, the filter and the dialog around the shared viewer (viewer.js).
// Heatmaps arrive per image as <entry.assets>/heat.js, which calls captionlensHeat(stem, {method: PNG data URL});
// loading them through a script and data: URLs keeps the canvas readable when the page is opened from file://.
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("captionlens-data").textContent);
  const $ = (id) => document.getElementById(id);
  const dialog = $("viewer");
  const pendingHeat = {};   // stem -> {promise, resolve}
  let current = -1;

  window.captionlensHeat = function (stem, sprites) {
    if (pendingHeat[stem]) pendingHeat[stem].resolve(sprites);
  };

  function asset(entry, file) { return entry.assets + "/" + file; }

  function heatSprites(entry) {
    if (!pendingHeat[entry.stem]) {
      const slot = {};
      slot.promise = new Promise(function (resolve, reject) {
        slot.resolve = resolve;
        const script = document.createElement("script");
        script.src = asset(entry, "heat.js");
        script.onerror = function () { reject(new Error("cannot load " + script.src)); };
        document.head.appendChild(script);
      });
      pendingHeat[entry.stem] = slot;
    }
    return pendingHeat[entry.stem].promise;
  }

  const viewer = window.captionlensViewer({
    colormaps: DATA.colormaps,
    labels: DATA.labels,
    sprite: function (entry, method) {
      return heatSprites(entry).then(function (sprites) { return sprites[method]; });
    },
    isActive: function () { return dialog.open; },
  });

  function open(index) {
    const entry = DATA.entries[index];
    entry.key = entry.stem;
    current = index;
    $("viewer-title").textContent = entry.name + " \u2014 " + entry.tokens.join(" ");
    $("prev").disabled = index === 0;
    $("next").disabled = index === DATA.entries.length - 1;
    viewer.show(entry, asset(entry, "image.jpg"));
    if (!dialog.open) dialog.showModal();
    history.replaceState(null, "", "#" + entry.stem);
  }

  $("gallery").addEventListener("click", function (event) {
    const card = event.target.closest(".card");
    if (card) open(Number(card.dataset.entry));
  });
  $("filter").addEventListener("input", function (event) {
    const query = event.target.value.trim().toLowerCase();
    document.querySelectorAll("#gallery li").forEach(function (item) {
      item.hidden = query !== "" && item.textContent.toLowerCase().indexOf(query) < 0;
    });
  });
  $("prev").addEventListener("click", function () { open(current - 1); });
  $("next").addEventListener("click", function () { open(current + 1); });
  $("close").addEventListener("click", function () { dialog.close(); });
  dialog.addEventListener("close", function () { history.replaceState(null, "", location.pathname); });

  const linked = DATA.entries.findIndex(function (entry) { return "#" + entry.stem === location.hash; });
  if (linked >= 0) open(linked);
})();
