// The overlay opacity slider on the result card (the only script on the page).
document.addEventListener("DOMContentLoaded", function () {
  var slider = document.getElementById("opacity");
  var overlay = document.getElementById("overlay");
  var out = document.getElementById("opacity-value");
  if (!slider || !overlay) { return; }
  function apply() {
    overlay.style.opacity = String(slider.value / 100);
    if (out) { out.textContent = slider.value + "%"; }
  }
  slider.addEventListener("input", apply);
  apply();
});
